"""module_utils: the vocabulary (signals), the clock (time formatting) and the state store."""

import json
import os

import pytest

from ansible.module_utils.sigsleuth_clock import iso_utc
from ansible.module_utils.sigsleuth_state import StateStore, atomic_write
from ansible.module_utils.sigsleuth_vocabulary import parse_signal, parse_signals, signal_name


@pytest.mark.parametrize("value, number", [
    ("KILL", 9), ("SIGKILL", 9), ("sigkill", 9), (" term ", 15), (9, 9), ("9", 9), ("IOT", 6), (64, 64),
])
def test_parse_signal(value, number):
    assert parse_signal(value) == number


@pytest.mark.parametrize("value", ["SIGFOO", "", "0", 0, 65, -9, True, "KILL9"])
def test_parse_signal_rejects(value):
    with pytest.raises(ValueError) as info:
        parse_signal(value)
    assert "valid names are HUP, INT, QUIT" in str(info.value)
    assert "numbers 1-64" in str(info.value)


def test_parse_signals_sorts_and_dedupes():
    assert parse_signals(["TERM", "KILL", "SIGKILL", 9]) == [9, 15]
    assert parse_signals("KILL") == [9]
    assert parse_signals(15) == [15]


def test_parse_signals_rejects_empty_and_names_the_bad_one():
    with pytest.raises(ValueError) as info:
        parse_signals([])
    assert "no signals given" in str(info.value)
    with pytest.raises(ValueError) as info:
        parse_signals(["KILL", "SIGWAT"])
    assert "'SIGWAT'" in str(info.value)


def test_signal_name():
    assert signal_name(9) == "SIGKILL"
    assert signal_name(34) == "SIGRTMIN"
    assert signal_name(36) == "SIGRTMIN+2"
    assert signal_name(99) == "SIG99"


def test_iso_utc():
    assert iso_utc(None) is None
    assert iso_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_utc(1_795_676_384_407_047_209) == "2026-11-26T06:59:44.407047Z"
    assert iso_utc(1_000_000_999) == "1970-01-01T00:00:01.000000Z"  # truncated, never rounded up


def test_atomic_write_mode_and_no_leftovers(tmp_path):
    path = str(tmp_path / "file")
    atomic_write(path, "hello")
    atomic_write(path, b"bytes")
    with open(path, "rb") as handle:
        assert handle.read() == b"bytes"
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert os.listdir(str(tmp_path)) == ["file"]


@pytest.fixture
def boot_id(tmp_path):
    path = tmp_path / "boot_id"
    path.write_text("boot-1\n")
    return path


def test_state_store_put_and_drop(tmp_path, boot_id):
    store = StateStore(str(tmp_path / "state"), boot_id_path=str(boot_id))
    assert store.load() == {}
    assert store.section("ftrace") is None
    store.put("ftrace", {"instance": "sigsleuth"})
    store.put("snapshot", {"count": 3})
    assert oct(os.stat(store.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    data = store.load()
    assert data["boot_id"] == "boot-1" and data["dir_created"] is True and data["format"] == 1
    assert store.section("ftrace") == {"instance": "sigsleuth"}

    assert store.drop("ftrace") is True
    assert store.drop("ftrace") is False
    assert os.path.exists(store.path)
    assert store.drop("snapshot") is True
    assert not os.path.exists(store.state_dir)
    assert store.drop("snapshot") is False


def test_state_store_keeps_a_directory_it_did_not_create(tmp_path, boot_id):
    directory = tmp_path / "existing"
    directory.mkdir()
    store = StateStore(str(directory), boot_id_path=str(boot_id))
    store.put("ftrace", {})
    assert store.load()["dir_created"] is False
    store.drop("ftrace")
    assert directory.is_dir() and list(directory.iterdir()) == []


def test_state_store_stale_after_reboot(tmp_path, boot_id):
    store = StateStore(str(tmp_path / "state"), boot_id_path=str(boot_id))
    store.put("ftrace", {"instance": "sigsleuth"})
    store.put("snapshot", {"count": 3})
    boot_id.write_text("boot-2\n")
    assert store.is_stale()
    assert store.section("ftrace") is None
    # Writing after a reboot starts afresh: sections of the old boot do not survive.
    store.put("snapshot", {"count": 4})
    data = store.load()
    assert data["boot_id"] == "boot-2" and "ftrace" not in data and data["dir_created"] is True
    assert not store.is_stale()


def test_state_store_corrupt_file(tmp_path, boot_id):
    directory = tmp_path / "state"
    directory.mkdir()
    (directory / "state.json").write_text("[1, 2")
    store = StateStore(str(directory), boot_id_path=str(boot_id))
    with pytest.raises(ValueError) as info:
        store.load()
    assert "cannot read sigsleuth state" in str(info.value)
    (directory / "state.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError):
        store.load()
