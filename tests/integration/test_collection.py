"""The collection as its users get it: the tarball `make collection` builds, installed with
`ansible-galaxy collection install -p`, used from a directory outside this repository with no ansible.cfg of
ours: ansible-doc by fully qualified name, and this machine armed, collected and disarmed with the
collection's playbooks, naming the killer of a staged kill; then the same through ansible-runner (the engine
Automation Controller and AWX run jobs with), whose artifacts must hold collect's set_stats summary.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import yaml

from sigsleuth_support import INVENTORY_HOST, ROOT, ansible_playbook_path, assert_no_residue

sys.path.insert(0, os.path.join(ROOT, "collection"))
import build  # noqa: E402

with open(os.path.join(ROOT, "galaxy.yml")) as _handle:
    GALAXY = yaml.safe_load(_handle)
COLLECTION = "%s.%s" % (GALAXY["namespace"], GALAXY["name"])
# Targets need Python 3.9+ with the standard library only; this one is outside every virtual environment.
TARGET_PYTHON = "/usr/bin/python3"


class Installed:
    """Where the collection is installed and a project directory that knows nothing of this repository."""

    def __init__(self, work):
        self.venv_bin = os.path.dirname(ansible_playbook_path())
        self.tarball = self._build(work)
        self.collections = str(work / "collections")
        self.project = work / "project"
        self.project.mkdir()
        self.inventory = self.project / "inventory.ini"
        self.inventory.write_text("%s ansible_connection=local ansible_python_interpreter=%s\n"
                                  % (INVENTORY_HOST, TARGET_PYTHON))
        # Nothing of ours reaches ansible: no ANSIBLE_* from the caller, no ansible.cfg, only the install path.
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
        self.env.update(ANSIBLE_COLLECTIONS_PATH=self.collections, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                        PATH=self.venv_bin + os.pathsep + os.environ.get("PATH", ""))
        self.run([os.path.join(self.venv_bin, "ansible-galaxy"), "collection", "install", "-p", self.collections,
                  self.tarball])

    def _build(self, work):
        proc = subprocess.run([os.path.join(self.venv_bin, "python"), os.path.join(ROOT, "collection", "build.py"),
                               "--dest", str(work / "build")], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, "collection/build.py failed:\n%s%s" % (proc.stdout, proc.stderr)
        tarball = proc.stdout.strip().splitlines()[-1]
        assert tarball == str(work / "build" / ("%s-%s-%s.tar.gz" % (
            GALAXY["namespace"], GALAXY["name"], GALAXY["version"]))), proc.stdout
        assert os.path.isfile(tarball)
        return tarball

    def run(self, argv, expect_rc=0, timeout=900):
        proc = subprocess.run(argv, cwd=str(self.project), env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if expect_rc is not None and proc.returncode != expect_rc:
            pytest.fail("%s exited %d\n--- stdout\n%s\n--- stderr\n%s" % (
                " ".join(argv), proc.returncode, proc.stdout[-20000:], proc.stderr[-5000:]))
        return proc

    def playbook(self, name, *args, expect_rc=0):
        return self.run([os.path.join(self.venv_bin, "ansible-playbook"), "-i", str(self.inventory),
                         "%s.%s" % (COLLECTION, name)] + list(args), expect_rc=expect_rc)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("collection")
    assert not str(work).startswith(ROOT + os.sep)
    found = Installed(work)
    assert not list(found.project.glob("ansible.cfg"))
    return found


def test_installed_where_asked(installed):
    manifest = os.path.join(installed.collections, "ansible_collections", GALAXY["namespace"], GALAXY["name"],
                            "MANIFEST.json")
    with open(manifest) as handle:
        info = json.load(handle)["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == (
        GALAXY["namespace"], GALAXY["name"], GALAXY["version"])


def test_ansible_doc_by_fqcn(installed):
    names = build.Names(ROOT, GALAXY["namespace"], GALAXY["name"])
    ansible_doc = os.path.join(installed.venv_bin, "ansible-doc")
    for module in names.modules:
        out = installed.run([ansible_doc, "%s.%s" % (COLLECTION, module)]).stdout
        assert "%s.%s" % (COLLECTION, module) in out and "ansible_collections" in out, out[:500]
        doc = json.loads(installed.run([ansible_doc, "--json", "%s.%s" % (COLLECTION, module)]).stdout)
        doc = doc["%s.%s" % (COLLECTION, module)]["doc"]
        assert (doc["collection"], doc["version_added_collection"]) == (COLLECTION, COLLECTION)
        assert doc["version_added"] <= GALAXY["version"] and doc["options"], doc["version_added"]
    out = installed.run([ansible_doc, "-t", "role", "%s.%s" % (COLLECTION, names.role)]).stdout
    assert "ENTRY POINT: collect" in out.replace("*", ""), out[:500]
    for name in ("sigsleuth_summary", "sigsleuth_stats"):
        out = installed.run([ansible_doc, "-t", "filter", "%s.%s" % (COLLECTION, name)]).stdout
        assert "%s.%s" % (COLLECTION, name) in out, out[:500]


def test_a_project_using_the_role_and_a_module_by_fqcn_passes_lint(installed, tmp_path):
    """The role copied out of this tree does not lint elsewhere (its modules do not resolve); from the
    installed collection, by FQCN, it does, with the production profile."""
    project = tmp_path / "lint-project"
    project.mkdir()
    (project / "site.yml").write_text("""---
- name: Find who keeps killing the agent
  hosts: all
  become: true
  tasks:
    - name: Arm for SIGKILL and SIGTERM
      ansible.builtin.include_role:
        name: %(collection)s.sigsleuth
      vars:
        sigsleuth_action: arm
        sigsleuth_signals: [KILL, TERM]

    - name: Read the report directly
      %(collection)s.sigsleuth_facts:
        host: web1
""" % {"collection": COLLECTION})
    proc = subprocess.run([os.path.join(installed.venv_bin, "ansible-lint"), "--nocolor", "--offline", "--profile",
                           "production", "site.yml"], cwd=str(project), env=installed.env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def check_killer(report, truth):
    """The staged kill is in the report with the harness's sender and the sender's real ancestors."""
    expected = truth["kills"][0]
    kills = [kill for kill in report["kills"] if kill["victim"]["pid"] == expected["victim"]["pid"]]
    assert len(kills) == 1, "expected one kill of %s: %s" % (expected["victim"], report["kills"])
    kill = kills[0]
    assert kill["sender"] and kill["sender"]["pid"] == expected["sender"]["pid"], (kill["sender"], expected)
    assert [entry["pid"] for entry in kill["ancestry"][:len(expected["ancestry"])]] == [
        entry["pid"] for entry in expected["ancestry"]], (kill["ancestry"], expected["ancestry"])
    return kill


def test_arm_collect_disarm_with_the_collections_playbooks(installed, host_baseline, scenarios):
    scenario = scenarios("seed", "now")
    try:
        installed.playbook("arm")
        scenario.trigger()
        truth = scenario.wait()
        run = installed.playbook("collect")
        # No sigsleuth_report_dir and no ansible.cfg: reports/ in the current directory, not in the collection.
        path = installed.project / "reports" / INVENTORY_HOST / "report.json"
        assert path.is_file(), "no %s\n%s" % (path, run.stdout[-5000:])
        assert not glob.glob(os.path.join(installed.collections, "**", "report.json"), recursive=True)
        report = json.loads(path.read_text())
        check_killer(report, truth)
        assert report["producer"] == {"name": COLLECTION, "version": GALAXY["version"]}
        assert (installed.project / "reports" / "summary.md").is_file()
    finally:
        disarm = installed.playbook("disarm", expect_rc=None)
        scenario.stop()
    assert disarm.returncode == 0, disarm.stdout[-5000:]
    assert_no_residue(host_baseline, "after the collection's disarm")


def runner_project(installed, work):
    """A Controller-style project: playbooks of its own that import the collection's, an inventory, an env."""
    private = work / "runner"
    for directory in ("project", "inventory", "env"):
        (private / directory).mkdir(parents=True)
    for action in ("arm", "collect", "disarm"):
        (private / "project" / ("%s.yml" % action)).write_text(
            "---\n- name: sigsleuth %s\n  ansible.builtin.import_playbook: %s.%s\n" % (action, COLLECTION, action))
    (private / "inventory" / "hosts").write_text(installed.inventory.read_text())
    (private / "env" / "envvars").write_text(yaml.safe_dump({
        "ANSIBLE_COLLECTIONS_PATH": installed.collections, "PATH": installed.env["PATH"]}))
    return private


def run_runner(private, playbook):
    import ansible_runner

    result = ansible_runner.run(private_data_dir=str(private), playbook=playbook, quiet=True, timeout=900)
    assert result.status == "successful" and result.rc == 0, "ansible-runner %s: %s rc=%s\n%s" % (
        playbook, result.status, result.rc, result.stdout.read()[-10000:])
    return result


def stats_artifacts(result):
    """artifact_data of the playbook_on_stats event, read from the job's artifacts on disk."""
    found = []
    for path in sorted(glob.glob(os.path.join(result.config.artifact_dir, "job_events", "*.json"))):
        with open(path) as handle:
            event = json.load(handle)
        if event.get("event") == "playbook_on_stats":
            found.append(event["event_data"].get("artifact_data"))
    assert len(found) == 1, "expected one playbook_on_stats event in %s" % result.config.artifact_dir
    return found[0]


def test_ansible_runner_artifacts_hold_the_stats(installed, host_baseline, scenarios, tmp_path):
    private = runner_project(installed, tmp_path)
    scenario = scenarios("seed", "now")
    try:
        run_runner(private, "arm.yml")
        scenario.trigger()
        truth = scenario.wait()
        result = run_runner(private, "collect.yml")
        artifacts = stats_artifacts(result)
    finally:
        import ansible_runner

        disarmed = ansible_runner.run(private_data_dir=str(private), playbook="disarm.yml", quiet=True, timeout=900)
        scenario.stop()
    assert disarmed.rc == 0, disarmed.stdout.read()[-5000:]
    assert_no_residue(host_baseline, "after disarm through ansible-runner")

    summary = artifacts["sigsleuth_reports"][INVENTORY_HOST]
    expected = truth["kills"][0]
    kills = [kill for kill in summary["kills"] if kill["victim"]["pid"] == expected["victim"]["pid"]]
    assert len(kills) == 1, summary
    assert kills[0]["sender"]["pid"] == expected["sender"]["pid"]
    assert kills[0]["signal"] == "SIGKILL"
    assert [entry["pid"] for entry in kills[0]["ancestry"][:len(expected["ancestry"])]] == [
        entry["pid"] for entry in expected["ancestry"]]
    assert summary["error"] is None and summary["kills_total"] >= 1
    assert summary["sources"]["ftrace"]["armed"] is True
    assert summary["producer"] == {"name": COLLECTION, "version": GALAXY["version"]}
    # The full report is on the execution node; the artifact says where.
    report_path = summary["report_path"]
    assert report_path == str(private / "project" / "reports" / INVENTORY_HOST / "report.json")
    check_killer(json.loads(open(report_path).read()), truth)
    assert len(json.dumps(summary)) <= 16384
