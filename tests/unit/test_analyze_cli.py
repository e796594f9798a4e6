"""`sigsleuth analyze` (cli/sigsleuth.py): the collect engine on saved inputs, offline. The same kills as
the module's own reading of the same trace; a foreign or unreadable input is one line on stderr, a non-zero
exit and nothing written; progress on stderr for large inputs. (tests/integration/test_analyze_offline.py
compares it with a live collect of a real staged kill.)"""

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import jsonschema
import pytest

from ansible.module_utils import sigsleuth_collect
from ansible.module_utils.sigsleuth_clock import clock_offset_ns
from ansible.module_utils.sigsleuth_state import StateStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRACE = os.path.join(ROOT, "tests", "fixtures", "ftrace", "seed_small.trace")
AUDIT = os.path.join(ROOT, "tests", "fixtures", "audit", "raw", "audit.log")
CLI = os.path.join(ROOT, "cli", "sigsleuth.py")
_spec = importlib.util.spec_from_file_location("sigsleuth_cli", CLI)
cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cli)


def png(path):
    """A small real PNG: what a user might hand over by mistake."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")
    with open(path, "wb") as handle:
        handle.write(raw)
    return str(path)


@pytest.fixture(scope="module")
def validator():
    with open(os.path.join(ROOT, "schema", "report.schema.json")) as handle:
        schema = json.load(handle)
    return jsonschema.validators.validator_for(schema)(schema)


def run(*args):
    """The installed way: a separate process, as .venv/bin/sigsleuth runs it."""
    return subprocess.run([sys.executable, CLI, "analyze"] + list(args), capture_output=True, text=True,
                          timeout=120)


def identities(kill):
    def who(entry):
        # Not `exited` where no exit was traced: live, /proc settles it; offline it stays unknown (a note).
        return None if entry is None else (entry["pid"], entry.get("tid"), entry["comm"], entry.get("exited_at"))
    return (kill["time"], kill["signal"]["number"], kill["mechanism"], kill["origin"], who(kill["victim"]),
            who(kill["sender"]), [who(ancestor) for ancestor in kill["ancestry"]], kill.get("evidence"))


def test_offline_gives_the_kills_the_module_gives(tmp_path, validator, monkeypatch):
    state_dir = tmp_path / "state"
    section = {"instance": "sigsleuth", "tracefs": "/nonexistent", "signals": [9, 15], "armed_at_ns": 1,
               "clock": "boot", "clock_offset_ns": clock_offset_ns(), "buffer_size_kb": 8192, "precision": "light"}
    StateStore(str(state_dir)).put("ftrace", section)
    monkeypatch.setattr(sigsleuth_collect, "audit_status", lambda **_: {})
    live = sigsleuth_collect.collect(str(state_dir), host="web1", trace_file=TRACE, proc=str(tmp_path / "noproc"))
    proc = run("--trace", TRACE, "--state", str(state_dir / "state.json"), "--host", "web1",
               "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    written = proc.stdout.split()
    assert written == [str(tmp_path / "out" / "web1" / "report.json"), str(tmp_path / "out" / "summary.md"),
                       str(tmp_path / "out" / "summary.html")]
    with open(written[0]) as handle:
        offline = json.load(handle)
    assert not list(validator.iter_errors(offline))
    assert offline["kills"] and [identities(k) for k in offline["kills"]] == [identities(k) for k in live["kills"]]
    assert offline["signals"] == [9, 15] and offline["armed_at"] == live["armed_at"]
    assert "summary (offline analysis)" in open(written[1]).read()
    assert proc.stderr.strip().splitlines()[-1] == "sigsleuth analyze: %d kills on web1" % len(offline["kills"])


def test_without_state_the_boot_time_places_the_trace(tmp_path):
    proc = run("--trace", TRACE, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "give --boot-time" in proc.stderr and not (tmp_path / "out").exists()
    proc = run("--trace", TRACE, "--boot-time", "2026-11-26T06:00:00Z", "--host", "seed", "--out",
               str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "seed" / "report.json").read_text())
    assert [kill["time"][:13] for kill in report["kills"]] == ["2026-11-26T06", "2026-11-26T06"]
    assert report["sources"]["snapshot"]["armed"] is False


def test_sources_not_given_say_so_and_nothing_of_this_machine_is_read(tmp_path):
    state_dir = tmp_path / "state"
    store = StateStore(str(state_dir))
    store.put("ftrace", {"instance": "sigsleuth", "tracefs": "/sys/kernel/tracing", "signals": [9],
                         "armed_at_ns": 1, "clock": "boot", "clock_offset_ns": 0, "precision": "light"})
    store.put("snapshot", {"path": "/var/lib/sigsleuth/snapshot.jsonl", "taken_at_ns": 1, "count": 3})
    store.put("audit", {"armed": True, "armed_at_ns": 1, "signals": [9], "log_file": "/var/log/audit/audit.log",
                        "rules": []})
    report = sigsleuth_collect.analyze(store.load(), "web1", trace_file=TRACE)
    assert report["sources"]["audit"] == {"armed": False, "reason": sigsleuth_collect.NOT_GIVEN % "audit log"}
    assert report["sources"]["snapshot"]["error"] == sigsleuth_collect.NOT_GIVEN % "snapshot"
    assert report["sources"]["ftrace"]["per_cpu"] == {}
    alive = [entry for kill in report["kills"] for entry in [kill["victim"]] + kill["ancestry"]
             if not entry["exited"]]
    assert alive and all(sigsleuth_collect.OFFLINE_LIVENESS in entry["notes"] for entry in alive)


@pytest.mark.parametrize("what", ["png-trace", "png-audit", "trace-as-audit", "missing", "directory",
                                  "text-trace", "state", "snapshot"])
def test_a_foreign_or_unreadable_input_is_one_line_and_nothing_is_written(tmp_path, what):
    picture = png(tmp_path / "screenshot.png")
    text = tmp_path / "notes.txt"
    text.write_text("the agent died again at 07:01, see attached\n" * 50)
    args = {
        "png-trace": ["--trace", picture, "--boot-time", "0"],
        "png-audit": ["--audit-log", picture],
        "trace-as-audit": ["--audit-log", TRACE],
        "missing": ["--trace", str(tmp_path / "nonexistent"), "--boot-time", "0"],
        "directory": ["--audit-log", str(tmp_path)],
        "text-trace": ["--trace", str(text), "--boot-time", "0"],
        "state": ["--trace", TRACE, "--state", str(text)],
        "snapshot": ["--trace", TRACE, "--boot-time", "0", "--snapshot", picture],
    }[what]
    out = tmp_path / "out"
    proc = run(*(args + ["--out", str(out)]))
    assert proc.returncode == 2, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sigsleuth analyze: error: "), proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_progress_on_stderr_for_large_inputs(tmp_path, monkeypatch, capsys):
    big = tmp_path / "audit.log"
    with open(AUDIT, "rb") as handle:
        sample = handle.read()
    with open(big, "wb") as handle:
        while handle.tell() < cli.PROGRESS_MIN_BYTES + len(sample):
            handle.write(sample)
    monkeypatch.setattr(cli, "PROGRESS_EVERY_S", 0.001)
    assert cli.main(["analyze", "--audit-log", str(big), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "sigsleuth analyze: reading %s: " % big in err and "MB (" in err
    small = tmp_path / "small.log"
    shutil.copy(AUDIT, small)
    assert cli.main(["analyze", "--audit-log", str(small), "--out", str(tmp_path / "out2")]) == 0
    assert "reading" not in capsys.readouterr().err


def test_offline_reports_are_redacted_as_collect_redacts(tmp_path):
    """Reports of handed-over logs travel in tickets too: the default patterns apply, --redact replaces them,
    --no-redact turns redaction off, and a malformed pattern writes nothing."""
    def analyze(*extra):
        out = tmp_path / ("out%d" % len(list(tmp_path.iterdir())))
        proc = run("--audit-log", AUDIT, "--boot-time", "2026-11-26T06:00:00Z", "--host", "h", "--out", str(out),
                   *extra)
        return proc, out
    proc, out = analyze()
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "h" / "report.json").read_text())["redaction"]["applied"] is True
    proc, out = analyze("--no-redact")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "h" / "report.json").read_text())["redaction"]["applied"] is False
    proc, out = analyze("--redact", "(")
    assert proc.returncode == 2 and "redact" in proc.stderr and not out.exists()
