"""The control-node writer (the sigsleuth_report_files action): host names are data, nothing is written
outside the report directory, no symlink is followed, and a host whose report cannot be written is named
with the reason while the others are written."""

import importlib.util
import json
import os
import stat

import pytest

from test_summary_filter import SEED_KILL, report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTION = os.path.join(ROOT, "roles", "sigsleuth", "action_plugins", "sigsleuth_report_files.py")
_spec = importlib.util.spec_from_file_location("sigsleuth_report_files", ACTION)
files = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(files)

PATH_LIKE = ["../x", "a/b", "..", ".", "/etc/passwd", ".hidden", "-rf", "%2E", "a%2Fb", "ä/ö", "x\ny", "a b",
             "\\..\\y", "~root", "*", ""]


def outcome(host, kills=()):
    return {"report": report(list(kills), host=host), "error": None}


def mode(path):
    return oct(stat.S_IMODE(os.lstat(path).st_mode))


@pytest.mark.parametrize("host", PATH_LIKE + ["localhost", "web-01.example.com", "10.0.0.1", "::1"])
def test_a_host_directory_name_is_one_harmless_component(host):
    name = files.host_dir_name(host)
    assert name and "/" not in name and "\0" not in name
    assert not name.startswith((".", "-")), name
    assert all(0x20 < ord(char) < 0x7f for char in name), name


def test_plain_names_stay_readable_and_the_mapping_is_one_to_one():
    assert files.host_dir_name("localhost") == "localhost"
    assert files.host_dir_name("web-01.example.com") == "web-01.example.com"
    assert files.host_dir_name("../x") == "%2E.%2Fx"
    assert files.host_dir_name("a/b") == "a%2Fb"
    names = [files.host_dir_name(host) for host in PATH_LIKE]
    assert len(set(names)) == len(names), names


def test_path_like_hosts_are_written_inside_the_report_dir(tmp_path):
    report_dir = tmp_path / "reports"
    hosts = [host for host in PATH_LIKE if host]
    written = files.write_reports(str(report_dir), {host: outcome(host, [SEED_KILL]) for host in hosts})
    assert written["write_errors"] == {}
    assert sorted(os.listdir(tmp_path)) == ["reports"]
    assert oct(stat.S_IMODE(os.stat(report_dir).st_mode)) == oct(0o700)
    for host in hosts:
        path = written["report_paths"][host]
        assert os.path.dirname(os.path.dirname(path)) == str(report_dir), (host, path)
        assert mode(path) == oct(0o600) and mode(os.path.dirname(path)) == oct(0o700)
        with open(path) as handle:
            assert json.load(handle)["host"] == host
    assert sorted(os.listdir(report_dir)) == sorted([files.host_dir_name(host) for host in hosts]
                                                    + ["summary.html", "summary.md"])
    for name in ("summary.md", "summary.html"):
        assert mode(report_dir / name) == oct(0o600)


def test_an_unwritable_host_fails_alone_with_its_reason(tmp_path):
    report_dir = tmp_path / "reports"
    report_dir.mkdir(mode=0o700)
    (report_dir / "blocked").write_text("a file where the host's directory would be\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), str(report_dir / "linked"))
    outcomes = {host: outcome(host) for host in ("blocked", "linked", "fine")}
    outcomes["failed"] = {"report": None, "error": "sigsleuth collection failed: no tracefs"}
    written = files.write_reports(str(report_dir), outcomes)
    assert set(written["write_errors"]) == {"blocked", "linked"}
    for host in ("blocked", "linked"):
        assert "not a directory of ours (a symlink or a file): not followed" in written["write_errors"][host]
        assert written["report_paths"][host] is None
    assert os.listdir(str(outside)) == []
    assert (report_dir / "blocked").read_text().startswith("a file where")
    assert os.path.isfile(written["report_paths"]["fine"])
    assert written["report_paths"]["failed"] is None
    summary = (report_dir / "summary.md").read_text()
    assert "report not written for blocked, linked." in summary
    assert "**Report not written:** %s" % files.summary_renderer().md_escape(
        written["write_errors"]["blocked"]) in summary
    assert "Report not written:</b> %s/blocked is not a directory of ours" % report_dir in (
        report_dir / "summary.html").read_text()


def test_a_symlinked_report_file_is_replaced_never_written_through(tmp_path):
    report_dir = tmp_path / "reports"
    (report_dir / "web1").mkdir(parents=True)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    os.symlink(str(target), str(report_dir / "web1" / "report.json"))
    os.symlink(str(target), str(report_dir / "summary.md"))
    written = files.write_reports(str(report_dir), {"web1": outcome("web1")})
    assert target.read_text() == "keep me\n"
    assert not os.path.islink(written["report_paths"]["web1"]) and not os.path.islink(written["summary_md"])
    assert [name for name in os.listdir(report_dir / "web1")] == ["report.json"]


def test_an_unusable_report_dir_is_one_clear_error(tmp_path):
    occupied = tmp_path / "file"
    occupied.write_text("")
    with pytest.raises(files.ReportWriteError, match="cannot use %s as the report directory" % occupied):
        files.write_reports(str(occupied), {"web1": outcome("web1")})
    with pytest.raises(files.ReportWriteError, match="must be an absolute path"):
        files.write_reports("relative/reports", {})


def test_check_mode_writes_nothing(tmp_path):
    report_dir = tmp_path / "reports"
    written = files.write_reports(str(report_dir), {"../x": outcome("../x")}, write=False)
    assert written["report_paths"]["../x"] == str(report_dir / "%2E.%2Fx" / "report.json")
    assert not report_dir.exists()
