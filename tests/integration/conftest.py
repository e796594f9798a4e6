"""Shared machinery for the integration tests: they arm this very machine, stage real kills and check the report.

Everything here is real: the playbooks run with the project's .venv ansible-playbook from the project root
against the default inventory (this machine over the local connection), and the kills are staged by
tests/scenarios/sigsleuth_scenarios.py, which records the ground truth.

* `armed_lock()` (tests/lock.py) is held per test module for the module's whole duration, so no two arming
  test runs overlap (a session-wide hold would deadlock other modules that take the lock themselves).
* Every fixture cleans up in a finalizer, even when the test fails: scenarios are stopped and reaped, the
  host is disarmed, and `host_baseline` checks that nothing is left behind.
"""

import json
import os

import pytest

from sigsleuth_support import (
    INVENTORY_HOST, SCHEMA_PATH, STATE_DIR, PlaybookRun, StagedScenario, assert_no_residue, disarm_quietly,
    host_snapshot, run_playbook, signals_extra_vars,
)
from tests.lock import armed_lock


@pytest.fixture(scope="module")
def arm_lock():
    """Exclusive use of tracing and audit on this machine for the whole test module."""
    with armed_lock():
        yield


@pytest.fixture(scope="module")
def host_baseline(arm_lock):
    """How the host looked before this module armed anything; checked again when the module ends."""
    if os.geteuid() != 0:
        pytest.skip("integration tests arm this machine: run them as root")
    state = host_snapshot()
    assert not os.path.exists(STATE_DIR), (
        "%s exists before the tests ran: a previous run did not disarm (run playbooks/disarm.yml)" % STATE_DIR)
    yield state
    assert_no_residue(state, "at the end of the module")


@pytest.fixture
def scenarios(tmp_path):
    """Factory: scenarios("seed", "now") stages a scenario; all are stopped and reaped after the test.
    (preexec_fn: see StagedScenario.)"""
    staged = []

    def start(name, reap="now", storm=None, preexec_fn=None):
        scenario = StagedScenario(name, reap, str(tmp_path), storm=storm, preexec_fn=preexec_fn)
        staged.append(scenario)
        return scenario

    yield start
    errors = []
    for scenario in reversed(staged):
        try:
            scenario.stop()
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n".join(errors)


@pytest.fixture
def armed(host_baseline):
    """Factory: armed(["KILL", "TERM"]) runs playbooks/arm.yml; the host is disarmed after the test,
    and then checked to be exactly as the module found it."""
    state = {"armed": False}

    def arm(signals=("KILL",), *extra):
        state["armed"] = True
        return run_playbook("arm.yml", *(signals_extra_vars(signals) + list(extra)))

    yield arm
    if state["armed"]:
        result = disarm_quietly()
        assert isinstance(result, PlaybookRun) and result.rc == 0, "disarm failed:\n%s" % (
            result.output() if isinstance(result, PlaybookRun) else result)
        assert_no_residue(host_baseline, "after disarm")


@pytest.fixture(scope="module")
def report_schema():
    import jsonschema

    with open(SCHEMA_PATH) as handle:
        schema = json.load(handle)
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@pytest.fixture
def collect(tmp_path, report_schema):
    """collect() runs playbooks/collect.yml into a temp report dir; returns the schema-valid report dict."""

    def run(*extra):
        report_dir = tmp_path / "reports"
        run = run_playbook("collect.yml", "-e", "sigsleuth_report_dir=%s" % report_dir, *extra)
        path = report_dir / INVENTORY_HOST / "report.json"
        assert path.is_file(), "collect wrote no %s\n%s" % (path, run.output())
        assert (report_dir / "summary.md").is_file(), "collect wrote no summary.md"
        assert oct(path.stat().st_mode & 0o777) == oct(0o600), "report.json is not 0600"
        assert oct((report_dir / INVENTORY_HOST).stat().st_mode & 0o777) == oct(0o700), "host dir is not 0700"
        with open(path) as handle:
            report = json.load(handle)
        errors = sorted(report_schema.iter_errors(report), key=lambda e: list(e.absolute_path))
        assert not errors, "report.json does not match the schema:\n" + "\n".join(
            "%s: %s" % ("/".join(str(p) for p in error.absolute_path), error.message) for error in errors[:20])
        return report

    return run


@pytest.fixture(scope="module")
def ssh_fleet(host_baseline):
    """The SSH test fleet (tests/integration/fleet_support.py), for the whole module: fleet-root (root, the one
    host that may join audit), fleet-sudo (an unprivileged user with sudo become), fleet-py39 (root, Python 3.9
    on the target) and fleet-down (nothing listens there). After the module: disarmed over SSH, then every
    sshd, session, user, key and sudoers file removed, and the machine checked to be as the module found it."""
    from fleet_support import FleetError, FleetHost, SSHFleet, python39

    old_python = python39()
    if old_python is None:
        pytest.fail("no ~/.pyenv/versions/3.9.*/bin/python for the Python 3.9 test host")
    fleet = SSHFleet([
        FleetHost("fleet-root", "127.0.0.2", audit=True),
        FleetHost("fleet-sudo", "127.0.0.3", user="unprivileged", become=True),
        FleetHost("fleet-py39", "127.0.0.4", python=old_python),
        FleetHost("fleet-down", "127.0.0.5", reachable=False),
    ])
    try:
        try:
            fleet.start()
        except FleetError as exc:
            pytest.fail("the SSH test fleet did not start: %s" % exc)
        yield fleet
    finally:
        disarm = fleet.run("disarm.yml") if fleet.base and os.path.exists(fleet.inventory) else None
        problems = fleet.stop()
        if disarm is not None and any(disarm.recap.get(host.name, {}).get("failed", 1) for host in fleet.hosts
                                      if host.reachable):
            problems.append("disarm over the fleet failed:\n" + disarm.output())
        assert not problems, "the SSH test fleet left things behind:\n- " + "\n- ".join(problems)
        assert_no_residue(host_baseline, "after the SSH test fleet")


@pytest.fixture
def fleet(ssh_fleet):
    """The SSH test fleet for one test; disarmed over SSH after it, pass or fail."""
    yield ssh_fleet
    disarm = ssh_fleet.run("disarm.yml")
    failed = [host.name for host in ssh_fleet.hosts if host.reachable
              and disarm.recap.get(host.name, {}).get("failed", 1)]
    assert not failed, "disarm failed on %s:\n%s" % (failed, disarm.output())
