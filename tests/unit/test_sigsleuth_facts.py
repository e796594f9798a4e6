"""sigsleuth_facts: reads state and a saved trace, returns a schema-valid report, changes nothing."""

import json
import os
from unittest import mock

import jsonschema
import pytest

import sigsleuth_facts
from ansible.module_utils import sigsleuth_collect
from ansible.module_utils.sigsleuth_clock import clock_offset_ns
from ansible.module_utils.sigsleuth_state import StateStore
from sigsleuth_fakes import run_module

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRACE = os.path.join(ROOT, "tests", "fixtures", "ftrace", "seed_small.trace")


@pytest.fixture(scope="module")
def validator():
    with open(os.path.join(ROOT, "schema", "report.schema.json")) as handle:
        schema = json.load(handle)
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.fixture
def state_dir(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture(autouse=True)
def no_audit_status():
    # The host's real audit status is not part of these tests.
    with mock.patch.object(sigsleuth_collect, "audit_status", side_effect=OSError("no auditctl")):
        yield


def arm_state(state_dir, **overrides):
    section = {"instance": "sigsleuth", "tracefs": "/nonexistent", "signals": [9, 15], "armed_at_ns": 1,
               "clock": "boot", "clock_offset_ns": clock_offset_ns(), "buffer_size_kb": 8192}
    section.update(overrides)
    StateStore(state_dir).put("ftrace", section)


def facts(state_dir, **args):
    result, failed = run_module(sigsleuth_facts, dict(state_dir=state_dir, host="web1", **args), check_mode=True)
    assert not failed, result
    assert result["changed"] is False
    assert result["ansible_facts"]["sigsleuth"] == result["report"]
    return result["report"]


def test_replayed_trace_names_sender_and_ancestry(state_dir, validator):
    arm_state(state_dir)
    before = sorted(os.listdir(state_dir))
    report = facts(state_dir, trace_file=TRACE)
    assert not list(validator.iter_errors(report))
    assert report["host"] == "web1" and report["signals"] == [9, 15]
    first = report["kills"][0]
    assert (first["sender"]["comm"], first["sender"]["exe"], first["mechanism"]) == ("kill", "/usr/bin/kill", "kill")
    assert first["ancestry"][0]["comm"] == "sh" and first["ancestry"][0]["exited"] is True
    assert sorted(os.listdir(state_dir)) == before


def test_not_armed_says_so(state_dir, validator):
    report = facts(state_dir)
    assert not list(validator.iter_errors(report))
    assert report["kills"] == [] and report["sources"]["ftrace"]["armed"] is False
    assert "arm.yml" in report["sources"]["ftrace"]["reason"]


def test_rebooted_host_says_the_trace_died(state_dir, tmp_path, validator):
    arm_state(state_dir)
    data = json.loads(open(os.path.join(state_dir, "state.json")).read())
    data["boot_id"] = "another-boot"
    with open(os.path.join(state_dir, "state.json"), "w") as handle:
        json.dump(data, handle)
    report = facts(state_dir)
    assert not list(validator.iter_errors(report))
    assert "rebooted" in report["sources"]["ftrace"]["reason"]


def test_interrupted_arm_is_not_read(state_dir, validator):
    arm_state(state_dir, armed_at_ns=None, clock_offset_ns=None)
    report = facts(state_dir)
    assert not list(validator.iter_errors(report))
    assert "did not complete" in report["sources"]["ftrace"]["reason"]


def test_unreadable_trace_is_an_error_in_sources_not_a_crash(state_dir, validator):
    arm_state(state_dir)
    report = facts(state_dir, trace_file="/nonexistent/trace")
    assert not list(validator.iter_errors(report))
    assert "cannot read" in report["sources"]["ftrace"]["error"]


def test_corrupt_state_fails_clearly(state_dir):
    os.makedirs(state_dir)
    with open(os.path.join(state_dir, "state.json"), "w") as handle:
        handle.write("{not json")
    result, failed = run_module(sigsleuth_facts, dict(state_dir=state_dir))
    assert failed and "cannot read sigsleuth state" in result["msg"]


def test_wall_clock_step_between_arm_and_collect_is_noted(state_dir, validator):
    arm_state(state_dir, clock_offset_ns=clock_offset_ns() - 5_000_000_000)
    report = facts(state_dir, trace_file=TRACE)
    assert not list(validator.iter_errors(report))
    step = report["sources"]["clock"]["step"]
    assert step and "+5.0" in step
    assert all(any("wall clock was stepped" in gap for gap in kill["gaps"]) for kill in report["kills"])


def test_an_overwritten_cpu_marker_in_a_replay_is_reported_as_loss(state_dir, tmp_path, validator):
    arm_state(state_dir)
    replay = tmp_path / "overwritten.trace"
    with open(TRACE, "rb") as handle:
        replay.write_bytes(b"##### CPU 1 buffer started ####\n" + handle.read())
    report = facts(state_dir, trace_file=str(replay))
    assert not list(validator.iter_errors(report))
    assert "CPU 1's buffer was overwritten" in report["sources"]["ftrace"]["loss"]
