"""Names chosen by processes become text one way everywhere (vocabulary.decode_name): the trace parser, the
lineage's comm of an exec, /proc, and audit records (tests/unit/test_audit_edge_cases.py) all agree, and a
literal backslash never reads like a byte that is not UTF-8."""

import os

import pytest

from ansible.module_utils.sigsleuth_lineage import Lineage
from ansible.module_utils.sigsleuth_procfs import read_process
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events
from ansible.module_utils.sigsleuth_vocabulary import decode_name, name_bytes

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace", "edge")


@pytest.mark.parametrize("raw, text", [
    (b"plain", "plain"),
    (b"k\xffill", "k\\xffill"),            # a byte that is not UTF-8
    (b"k\\xffill", "k\\\\xffill"),         # a backslash, then "xff"
    (b"a\\\\b", "a\\\\\\\\b"),
    (b"caf\xc3\xa9", "caf\u00e9"),
    (b"cut\xc3", "cut\\xc3"),              # half a character, as a 15-byte cut leaves it
    (b"\\", "\\\\"),
])
def test_decode_name_is_reversible(raw, text):
    assert decode_name(raw) == text and name_bytes(text) == raw


def test_decode_name_cuts_by_bytes_never_inside_an_escape():
    assert decode_name("\\xff" * 20, limit=15) == "\\xff" * 15
    assert decode_name("a\\\\b", limit=2) == "a\\\\"
    assert decode_name(b"abcdef", limit=3) == "abc"


def test_trace_names_and_the_comm_an_exec_gives_agree():
    stats = TraceStats()
    lineage = Lineage([9])
    with open(os.path.join(FIXTURES, "names_with_backslash.trace"), "rb") as stream:
        events = list(iter_events(stream, stats))
    assert stats.malformed == 0 and len(events) == 6
    for event in events:
        lineage.feed(event)
    execs = [fields for name, _, _, _, _, fields in events if name == "sched_process_exec"]
    assert [filename for filename, _, _ in execs] == ["/tmp/k\\\\xffill-is-a-long-name", "/tmp/k\\xffill-is-a-long-name"]
    literal, invalid = lineage.by_pid[200], lineage.by_pid[201]
    # the kernel cuts the file's name to 15 bytes: the names signal_generate then reports for them
    victims = {fields[4]: fields[3] for name, _, _, _, _, fields in events if name == "signal_generate"}
    assert literal.comm == victims[200] == "k\\\\xffill-is-a-l"
    assert invalid.comm == victims[201] == "k\\xffill-is-a-long"


def test_proc_names_use_the_same_encoding(tmp_path):
    base = tmp_path / "300"
    (base / "task" / "300").mkdir(parents=True)
    (base / "stat").write_bytes(b"300 (a\\b\xff) S 1 300 300 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n")
    (base / "cmdline").write_bytes(b"/tmp/x\\y\0\xff\0")
    (base / "status").write_bytes(b"Uid:\t0\t0\t0\t0\nNSpid:\t300\n")
    (base / "cgroup").write_bytes(b"0::/srv\\x41\n")
    os.symlink(b"/tmp/x\\y\xfe", str(base / "exe").encode())
    entry = read_process(300, proc=str(tmp_path))
    assert entry["comm"] == "a\\\\b\\xff" and entry["exe"] == "/tmp/x\\\\y\\xfe"
    assert entry["argv"] == ["/tmp/x\\\\y", "\\xff"] and entry["cgroup"] == "/srv\\\\x41"


def test_an_exe_is_resolved_by_the_bytes_its_name_stands_for(tmp_path):
    from ansible.module_utils.sigsleuth_report import resolved_exe
    target = os.path.join(os.fsencode(str(tmp_path)), b"real\\tool\xff")
    with open(target, "wb"):
        pass
    link = os.path.join(os.fsencode(str(tmp_path)), b"link\\to\xfe")
    os.symlink(target, link)
    assert resolved_exe(decode_name(link)) == decode_name(os.path.realpath(target))
    assert resolved_exe(decode_name(link)).endswith("/real\\\\tool\\xff")
    gone = decode_name(os.path.join(os.fsencode(str(tmp_path)), b"gone\\x"))
    assert resolved_exe(gone) == gone
