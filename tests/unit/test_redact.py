"""Redaction (module_utils/sigsleuth_redact.py): each default pattern, plain arguments left alone, the report's
escaped text, the pattern semantics, and a whole collect from an audit log whose argv, proctitle and cwd hold
a secret that must not leave the host."""

import json
import os
import sys

import jsonschema
import pytest
import yaml

from ansible.module_utils.sigsleuth_collect import collect
from ansible.module_utils.sigsleuth_redact import DEFAULT_PATTERNS, REDACTED, Redactor, pattern_errors, redact_report
from ansible.module_utils.sigsleuth_state import StateStore
from test_audit_parser import hexed, record, syscall_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, "roles", "sigsleuth")
sys.path.insert(0, os.path.join(ROLE, "filter_plugins"))

import sigsleuth_redact_errors as redact_filter  # noqa: E402

R = REDACTED


def redacted(*argv):
    return Redactor().argv(list(argv))


# ---------------------------------------------------------------- the default set

@pytest.mark.parametrize("argv, expected", [
    # --password=…, --passwd, --token …, separate or attached values
    (["app", "--password=hunter2"], ["app", "--password=" + R]),
    (["app", "--password", "hunter2"], ["app", "--password", R]),
    (["app", "--passwd", "hunter2", "--verbose"], ["app", "--passwd", R, "--verbose"]),
    (["app", "--db-password=hunter2"], ["app", "--db-password=" + R]),
    (["vault", "--token", "hunter2"], ["vault", "--token", R]),
    (["app", "--token=hunter2"], ["app", "--token=" + R]),
    (["app", "--api-key", "hunter2"], ["app", "--api-key", R]),
    (["openssl", "enc", "-pass", "pass:hunter2"], ["openssl", "enc", "-pass", R]),
    # -p after mysql-like commands, attached and separate, by path, inside sh -c
    (["mysql", "-uroot", "-phunter2", "shop"], ["mysql", "-uroot", "-p" + R, "shop"]),
    (["/usr/bin/mysqldump", "-u", "root", "-p", "hunter2"], ["/usr/bin/mysqldump", "-u", "root", "-p", R]),
    (["mariadb", "-phunter2"], ["mariadb", "-p" + R]),
    (["mariadb-dump", "-phunter2", "db"], ["mariadb-dump", "-p" + R, "db"]),
    (["sshpass", "-phunter2", "ssh", "db1"], ["sshpass", "-p" + R, "ssh", "db1"]),
    (["sh", "-c", "mysql -u root -phunter2 shop; ls -p /tmp"], ["sh", "-c", "mysql -u root -p" + R + " shop; ls -p /tmp"]),
    (["redis-cli", "-a", "hunter2", "ping"], ["redis-cli", "-a", R, "ping"]),
    (["curl", "-u", "admin:hunter2", "http://h:8080/"], ["curl", "-u", "admin:" + R, "http://h:8080/"]),
    # assignments: token=…, api_key=, secret=, AWS_SECRET_…=…, in a URL's query up to the next parameter
    (["env", "token=hunter2", "app"], ["env", "token=" + R, "app"]),
    (["env", "AWS_SECRET_ACCESS_KEY=hunter2", "aws", "s3", "ls"], ["env", "AWS_SECRET_ACCESS_KEY=" + R, "aws", "s3", "ls"]),
    (["env", "AWS_SECRET_KEY=hunter2"], ["env", "AWS_SECRET_KEY=" + R]),
    (["env", "AWS_SESSION_TOKEN=hunter2"], ["env", "AWS_SESSION_TOKEN=" + R]),
    (["app", "api_key=hunter2", "secret=hunter2"], ["app", "api_key=" + R, "secret=" + R]),
    (["env", "MYSQL_PWD=hunter2", "mysql"], ["env", "MYSQL_PWD=" + R, "mysql"]),
    (["curl", "https://api/x?page=2&access_token=hunter2&q=1"], ["curl", "https://api/x?page=2&access_token=" + R + "&q=1"]),
    (["mount", "-o", "username=bob,password=hunter2", "//srv/share", "/mnt"],
     ["mount", "-o", "username=bob,password=" + R, "//srv/share", "/mnt"]),
    # Authorization: Bearer/Basic, token headers
    (["curl", "-H", "Authorization: Bearer hunter2", "https://api"], ["curl", "-H", "Authorization: Bearer " + R, "https://api"]),
    (["curl", "-H", "authorization:Basic aHVudGVyMg==", "x"], ["curl", "-H", "authorization:Basic " + R, "x"]),
    (["curl", "--header=X-Api-Key: hunter2"], ["curl", "--header=X-Api-Key: " + R]),
    (["curl", "-H", "Private-Token: hunter2"], ["curl", "-H", "Private-Token: " + R]),
    # URL userinfo passwords
    (["psql", "postgres://app:hunter2@db:5432/shop"], ["psql", "postgres://app:" + R + "@db:5432/shop"]),
    (["git", "clone", "https://bob:hunter2@git.example/r.git"], ["git", "clone", "https://bob:" + R + "@git.example/r.git"]),
    (["redis-cli", "-u", "redis://:hunter2@cache:6379"], ["redis-cli", "-u", "redis://:" + R + "@cache:6379"]),
])
def test_default_patterns_redact_the_secret_and_keep_the_flag(argv, expected):
    assert redacted(*argv) == expected
    assert len(expected) == len(argv)


@pytest.mark.parametrize("argv", [
    ["ls", "-p", "/tmp"],                                          # -p of another command
    ["mysql", "-p", "-e", "select 1"],                             # mysql prompts: -p followed by a flag
    ["mysqldump", "--single-transaction", "-p"],                   # -p at the end, no value
    ["mysql", "--port=3306", "-P", "3307", "-h", "db"],            # port flags are not -p
    ["app", "--token-file=/etc/app/token", "--password-file", "/etc/app/pw"],  # where a secret is, not it
    ["env", "AWS_ACCESS_KEY_ID=AKIAEXAMPLE", "AWS_DEFAULT_REGION=eu-west-1", "aws"],
    ["app", "--bypass=1", "--compass", "north", "--passes=3"],     # words that merely contain "pass"
    ["kubectl", "get", "secret", "db-creds", "-o", "yaml"],        # a positional word, not a flag
    ["curl", "https://api.example:8443/v1/items?page=2"],          # a port is not a userinfo password
    ["ssh", "-p", "2222", "bob@db1"],                             # ssh's -p is a port
    ["docker", "run", "-u", "1000:1000", "image"],                 # -u of another command
    ["python3", "-c", "print('hello world')"],
    ["sleep", "600"],
])
def test_plain_arguments_are_unchanged(argv):
    redactor = Redactor()
    assert redactor.argv(list(argv)) == argv
    assert redactor.redacted == 0


def test_argv_as_the_report_stores_it_non_utf8_and_backslashes():
    """The report's text: a byte that is not UTF-8 as \\xNN, a backslash as \\\\ (vocabulary.decode_name)."""
    assert redacted("app", "--password=\\xff\\xfehunter2") == ["app", "--password=" + R]
    assert redacted("app", "--password", "hun\\\\ter2") == ["app", "--password", R]
    assert redacted("caf\\xe9", "--token=\\x00\\x01") == ["caf\\xe9", "--token=" + R]
    assert redacted("caf\\xe9", "\\xff--verbose") == ["caf\\xe9", "\\xff--verbose"]
    # a newline inside an argument is whitespace like any other
    assert redacted("sh", "-c", "echo hi\nmysql -phunter2") == ["sh", "-c", "echo hi\nmysql -p" + R]


@pytest.mark.parametrize("argv", [
    ["x", "aws_secret" * 3000],                     # a key's \w* that could backtrack at every repetition
    ["mysql"] * 5000,                               # a command word followed by itself, over and over
    (["mysql"] + ["a" * 500] * 64) * 4,             # ... with its 64 arguments each time
    ["a://" + "b:" * 15000],                        # a URL scheme without userinfo's @
    ["token" + " " * 30000 + "x"],                  # a header name, a long run of spaces, no colon
    ["--password"] * 5000,                          # flags without values
], ids=["aws-secret-repeated", "mysql-repeated", "mysql-long-args", "url-no-at", "spaces", "bare-flags"])
def test_hostile_argv_is_searched_without_blowing_up(argv):
    """A process chooses its argv: the default patterns keep their searches bounded (each quantifier that
    could meet another is bounded or anchored), so these finish at once; the old unbounded forms took
    minutes. No clock is asserted: a regression shows as a test that hangs."""
    assert Redactor().argv(list(argv)) == argv


def test_cwd_and_none():
    redactor = Redactor()
    assert redactor.text("/srv/app") == "/srv/app"
    assert redactor.text("/srv/token=hunter2") == "/srv/token=" + R
    assert redactor.text(None) is None and redactor.argv(None) is None and redactor.argv([]) == []
    assert redactor.redacted == 1


# ---------------------------------------------------------------- semantics

def test_named_group_secret_then_group_1_then_the_whole_match():
    assert Redactor([r"--key=(?P<secret>\w+)"]).argv(["a", "--key=abc"]) == ["a", "--key=" + R]
    assert Redactor([r"(--key)=(\w+)"]).argv(["a", "--key=abc"]) == ["a", R + "=abc"]  # group 1, as written
    assert Redactor([r"(?:--key)=(\w+)"]).argv(["a", "--key=abc"]) == ["a", "--key=" + R]
    assert Redactor([r"hunter\d"]).argv(["a", "xhunter2y"]) == ["a", "x" + R + "y"]
    # a named group takes precedence over group 1
    assert Redactor([r"(--k)=(?P<secret>\w+)"]).argv(["--k=v"]) == ["--k=" + R]


def test_a_secret_across_elements_is_replaced_in_each_and_argv_keeps_its_length():
    redactor = Redactor([r"--creds (?P<secret>\S+ \S+)"])
    assert redactor.argv(["app", "--creds", "bob", "hunter2", "--x"]) == ["app", "--creds", R, R, "--x"]


def test_patterns_see_the_original_text_and_overlapping_parts_merge():
    redactor = Redactor([r"--password=(?P<secret>\S+)", r"hunter(?P<secret>2\S*)"])
    assert redactor.argv(["a", "--password=hunter2xyz"]) == ["a", "--password=" + R]
    redactor = Redactor([r"ab(?P<secret>cd)", r"a(?P<secret>bc)"])
    assert redactor.argv(["abcde"]) == ["a" + R + "e"]


def test_an_empty_list_turns_redaction_off():
    redactor = Redactor([])
    assert redactor.argv(["app", "--password=hunter2"]) == ["app", "--password=hunter2"]
    report = redact_report({"kills": [{"sender": {"argv": ["--password=hunter2"], "cwd": "/x"}}]}, redactor)
    assert report["redaction"] == {"applied": False, "patterns": 0, "redacted": 0,
                                   "fields": ["argv", "cwd", "proctitle"]}
    assert report["kills"][0]["sender"]["argv"] == ["--password=hunter2"]


def test_a_malformed_pattern_is_refused_naming_it():
    with pytest.raises(ValueError) as raised:
        Redactor([r"ok", "(", "[a-"])
    message = str(raised.value)
    assert message.startswith("redact: ")
    assert "pattern 2 '(' is not a valid regular expression" in message and "pattern 3 '[a-'" in message
    assert pattern_errors("--password=(.*)") == [
        "the redaction patterns must be a list of regular expressions, got a string"]
    assert pattern_errors(None) == ["the redaction patterns must be a list of regular expressions, got nothing (null)"]
    assert pattern_errors([3]) == ["pattern 1 is not a string: 3"]
    assert pattern_errors(list(DEFAULT_PATTERNS)) == []


def test_the_role_filter_agrees_with_the_module():
    """The control node checks patterns with the filter (before any host is touched); the target with the
    module. Both must accept and refuse the same."""
    cases = [list(DEFAULT_PATTERNS), [], ["("], ["ok", "[a-", "(?P<secret>x"], "(", [3], None, {"a": 1}, 5, ["(?i)a", "a(?i)"]]
    for patterns in cases:
        assert redact_filter.sigsleuth_redact_errors(patterns) == pattern_errors(patterns), patterns
    assert redact_filter.FilterModule().filters()["sigsleuth_redact_errors"] is redact_filter.sigsleuth_redact_errors


def test_the_role_default_is_the_module_default():
    with open(os.path.join(ROLE, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    assert defaults["sigsleuth_redact"] == list(DEFAULT_PATTERNS)
    with open(os.path.join(ROLE, "meta", "argument_specs.yml")) as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]["sigsleuth_redact"]
    assert (spec["type"], spec["elements"]) == ("list", "str")
    assert spec["default"] == list(DEFAULT_PATTERNS)


def test_redact_report_reaches_every_argv_proctitle_and_cwd():
    secret = ["sh", "-c", "x", "--password=hunter2"]
    report = {
        "kills": [{
            "victim": {"argv": ["agent"], "cwd": "/"},
            "sender": {"argv": list(secret), "cwd": "/srv/token=hunter2"},
            "trigger": {"argv": list(secret)},
            "ancestry": [{"argv": list(secret)}, {"argv": None, "cwd": None}],
            "audit": {"proctitle": list(secret)},
            "future": [{"nested": {"argv": list(secret)}}],
        }],
        "sources": {"audit": {"log_file": "/var/log/audit/audit.log"}},
    }
    redact_report(report, Redactor())
    assert "hunter2" not in json.dumps(report)
    assert report["kills"][0]["sender"]["argv"][-1] == "--password=" + R
    assert report["kills"][0]["victim"] == {"argv": ["agent"], "cwd": "/"}
    assert report["redaction"]["redacted"] == 6 and report["redaction"]["applied"] is True


# ---------------------------------------------------------------- a whole collect, from an audit log

SECONDS = 1795676000
SENDER_ARGV = ["sh", "-c", "kill -9 200", "--password=hunter2"]
SENDER_CWD = "/srv/token=hunter2"


def audit_log_with_a_secret(tmp_path):
    title = hexed("\0".join(SENDER_ARGV))
    args = " ".join("a%d=%s" % (index, hexed(arg)) for index, arg in enumerate(SENDER_ARGV))
    text = (
        syscall_line(10, syscall=59, name="execve", key='"sigsleuth_exec"', pid=300, ppid=100, comm='"sh"',
                     exe='"/usr/bin/dash"', seconds=SECONDS, millis=100, enriched=False)
        + record("EXECVE", 10, "argc=%d %s" % (len(SENDER_ARGV), args), SECONDS, 100)
        + record("CWD", 10, "cwd=%s" % hexed(SENDER_CWD), SECONDS, 100)
        + record("PROCTITLE", 10, "proctitle=%s" % title, SECONDS, 100)
        + syscall_line(11, pid=300, ppid=100, comm='"sh"', exe='"/usr/bin/dash"', a0="c8", seconds=SECONDS,
                       millis=200, enriched=False)
        + record("OBJ_PID", 11, 'opid=200 oauid=-1 ouid=0 oses=-1 ocomm="agent"', SECONDS, 200)
        + record("CWD", 11, "cwd=%s" % hexed(SENDER_CWD), SECONDS, 200)
        + record("PROCTITLE", 11, "proctitle=%s" % title, SECONDS, 200)
    )
    path = tmp_path / "audit.log"
    path.write_text(text)
    return str(path)


def collect_audit_only(tmp_path, redactor=None):
    state_dir = str(tmp_path / "state")
    StateStore(state_dir).put("audit", {"log_file": audit_log_with_a_secret(tmp_path), "signals": [9],
                                        "armed_at_ns": (SECONDS - 10) * 10 ** 9, "clock_offset_ns": 0,
                                        "rules": []})
    os.makedirs(str(tmp_path / "proc"), exist_ok=True)
    return collect(state_dir, host="web1", proc=str(tmp_path / "proc"),
                   audit_run=lambda argv: (1, "", "no auditctl here"), redactor=redactor)


@pytest.fixture(scope="module")
def validator():
    with open(os.path.join(ROOT, "schema", "report.schema.json")) as handle:
        schema = json.load(handle)
    return jsonschema.validators.validator_for(schema)(schema)


def test_collect_redacts_argv_proctitle_and_cwd_by_default(tmp_path, validator):
    report = collect_audit_only(tmp_path)
    assert not list(validator.iter_errors(report))
    (kill,) = report["kills"]
    assert kill["sender"]["pid"] == 300 and kill["sender"]["comm"] == "sh" and kill["mechanism"] == "kill"
    assert kill["sender"]["argv"] == ["sh", "-c", "kill -9 200", "--password=" + R]
    assert kill["sender"]["cwd"] == "/srv/token=" + R
    assert "hunter2" not in json.dumps(report)
    assert report["redaction"]["applied"] is True and report["redaction"]["redacted"] >= 2
    assert report["redaction"]["patterns"] == len(DEFAULT_PATTERNS)


def test_collect_with_no_patterns_keeps_argv_and_cwd(tmp_path, validator):
    report = collect_audit_only(tmp_path, Redactor([]))
    assert not list(validator.iter_errors(report))
    (kill,) = report["kills"]
    assert kill["sender"]["argv"] == SENDER_ARGV and kill["sender"]["cwd"] == SENDER_CWD
    assert report["redaction"]["applied"] is False
