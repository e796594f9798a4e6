# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# tracefs control for sigsleuth. Standard library only; Python 3.9+.
"""Find and mount tracefs, and bring one dedicated trace instance to the settings sigsleuth needs.

Every write goes below ``<tracefs>/instances/<name>``: the top-level buffer and other instances are never
touched. Settings are plain dicts (desired vs observed) so callers can diff them and report a change before
making it.
"""

from __future__ import annotations

import collections
import errno
import os
import re

from ansible.module_utils.sigsleuth_command import REASON_TRACEFS_UNUSABLE, SigsleuthError, run_command
from ansible.module_utils.sigsleuth_vocabulary import DEBUGFS_TRACEFS, DEFAULT_TRACEFS, KILL_SYSCALLS, MOUNTS

DEFAULT_INSTANCE = "sigsleuth"
DEFAULT_BUFFER_SIZE_KB = 8192
# The boot clock keeps counting in suspend and is what CLOCK_BOOTTIME reads, so a timestamp converts to wall
# clock exactly with the offset measured at arm (sigsleuth_clock.clock_offset_ns).
TRACE_CLOCK = "boot"

SIGNAL_EVENT = "signal/signal_generate"
# Fork, exec, exit, thread creation and renames: what the lineage needs besides the kill itself.
LINEAGE_EVENTS = (
    "sched/sched_process_fork",
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "task/task_newtask",
    "task/task_rename",
)
REQUIRED_EVENTS = (SIGNAL_EVENT,) + LINEAGE_EVENTS
NO_FILTER = "none"
# The lineage reads task_newtask only to tell a thread from a process (a fork without one is a process): only
# thread creations are recorded, not one more event per fork of every process.
NEWTASK_EVENT = "task/task_newtask"
NEWTASK_FILTER = "clone_flags & 0x10000"  # CLONE_THREAD
OOM_EVENT = "oom/mark_victim"
PRECISION_LIGHT = "light"
PRECISION_SYSCALL = "syscall"
PRECISIONS = (PRECISION_LIGHT, PRECISION_SYSCALL)
# The light default: every event's rate follows process lifecycle or the armed signals, never ordinary
# syscalls. The OOM killer's mark and cgroup moves, where the kernel has them.
LIGHT_EVENTS = {OOM_EVENT: NO_FILTER, "cgroup/cgroup_attach_task": NO_FILTER}
# Syscall precision names the exact syscall of a send. Enabling any syscall event puts every syscall of every
# task through the tracing slow path, but each of these records only what is rare: kill-family calls (entries
# filtered on the armed signals; their exits close the window), CPU-time limits being set (RLIMIT_CPU 0,
# RLIMIT_RTTIME 15), and, where the kernel filters on user-space strings, opens of a cgroup.kill file.
KILL_SYSCALL_EVENTS = tuple("syscalls/sys_enter_" + name for name in KILL_SYSCALLS)
SYSCALL_EVENTS = dict(
    [(event, "signal") for event in KILL_SYSCALL_EVENTS]
    + [("syscalls/sys_exit_" + name, NO_FILTER) for name in KILL_SYSCALLS]
    + [
        ("syscalls/sys_enter_prlimit64", "new_rlim != 0 && (resource == 0 || resource == 15)"),
        ("syscalls/sys_enter_setrlimit", "resource == 0 || resource == 15"),
    ]
)
# filename.ustring reads the user-space path for the filter (Linux 5.17 and later): only opens of a
# cgroup.kill are recorded, never the ordinary ones.
CGROUP_KILL_FILTER = 'filename.ustring ~ "*/cgroup.kill"'
USER_STRING_FILTERS_SINCE = (5, 17)
CGROUP_KILL_OPEN_EVENTS = {"syscalls/sys_enter_" + name: CGROUP_KILL_FILTER for name in ("openat", "open", "openat2")}
OPTIONAL_EVENTS = tuple(LIGHT_EVENTS) + tuple(SYSCALL_EVENTS) + tuple(CGROUP_KILL_OPEN_EVENTS)
# Field names that carry the signal number in an event's format, in order of preference.
SIGNAL_FIELD_NAMES = ("sig", "signal")
# overwrite=1: when the buffer is full the oldest events go; with 0 the newest (the kill) would be dropped.
OPTIONS = {"record-tgid": "1", "overwrite": "1"}

INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


# ---------------------------------------------------------------- small file helpers

def _read(path):
    with open(path) as handle:
        return handle.read()


def _read_or_none(path):
    try:
        return _read(path)
    except OSError:
        return None


def _write(path, value):
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise SigsleuthError("cannot write %r to %s: %s" % (value, path, exc.strerror or exc))


# ---------------------------------------------------------------- finding and mounting

def _unescape_mount_field(text):
    # /proc/mounts escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), text)


def tracefs_mounts(mounts=MOUNTS):
    """Mount points of every tracefs in the mount table, in table order."""
    points = []
    try:
        with open(mounts) as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "tracefs":
                    points.append(_unescape_mount_field(fields[1]))
    except OSError:
        pass
    return points


def is_tracefs_root(path):
    """True when path looks like a usable tracefs root (it has instances/ and events/)."""
    return os.path.isdir(os.path.join(path, "instances")) and os.path.isdir(os.path.join(path, "events"))


def find_tracefs(mounts=MOUNTS):
    """The tracefs root to use, or None when none is mounted.

    /sys/kernel/tracing is preferred; /sys/kernel/debug/tracing (the old location inside debugfs) comes next,
    then any other tracefs mount point.
    """
    points = tracefs_mounts(mounts)
    for preferred in (DEFAULT_TRACEFS, DEBUGFS_TRACEFS):
        if preferred in points and is_tracefs_root(preferred):
            return preferred
    for point in points:
        if is_tracefs_root(point):
            return point
    return None


def mount_tracefs(path=DEFAULT_TRACEFS, run=None):
    """Mount tracefs at path; SigsleuthError (reason tracefs_unusable) with the command's output when it
    cannot be done."""
    run = run or run_command
    if not os.path.isdir(path):
        raise SigsleuthError("cannot mount tracefs: mount point %s does not exist (kernel built without "
                             "CONFIG_TRACING?)" % path, reason=REASON_TRACEFS_UNUSABLE)
    argv = ["mount", "-t", "tracefs", "nodev", path]
    rc, out, err = run(argv)
    if rc != 0:
        raise SigsleuthError("cannot mount tracefs at %s: %s" % (path, (err or out).strip() or "rc=%d" % rc),
                             rc=rc, stdout=out, stderr=err, reason=REASON_TRACEFS_UNUSABLE)
    if not is_tracefs_root(path):
        raise SigsleuthError("mounted tracefs at %s but it has no instances/ or events/ directory" % path,
                             rc=rc, stdout=out, stderr=err, reason=REASON_TRACEFS_UNUSABLE)
    return path


def unmount_tracefs(path, run=None):
    """Unmount the tracefs at path; raise SigsleuthError (e.g. busy) with the command's output."""
    run = run or run_command
    rc, out, err = run(["umount", path])
    if rc != 0:
        raise SigsleuthError("cannot unmount tracefs at %s: %s" % (path, (err or out).strip() or "rc=%d" % rc),
                             rc=rc, stdout=out, stderr=err)


# ---------------------------------------------------------------- instances

def instance_path(tracefs, name):
    """The instance directory for name; rejects names that could point outside instances/."""
    if not isinstance(name, str) or not INSTANCE_NAME.match(name) or name in (".", ".."):
        raise SigsleuthError("invalid instance name %r: use letters, digits, '_', '.', '-' (at most 64, not "
                             "starting with '.' or '-')" % (name,))
    return os.path.join(tracefs, "instances", name)


def instance_names(tracefs):
    try:
        return sorted(os.listdir(os.path.join(tracefs, "instances")))
    except OSError:
        return []


# mkdir/rmdir in tracefs create and destroy a whole instance; kept as separate functions so tests can stand in
# for the kernel with a fake tree.
def make_instance_dir(path):
    os.mkdir(path)


def remove_instance_dir(path):
    os.rmdir(path)


def create_instance(path):
    try:
        make_instance_dir(path)
    except OSError as exc:
        raise SigsleuthError("cannot create trace instance %s: %s" % (path, exc.strerror or exc))


def remove_instance(path):
    """Stop tracing in the instance and remove it. Returns False when there was nothing to remove."""
    if not os.path.isdir(path):
        return False
    on = os.path.join(path, "tracing_on")
    if os.path.exists(on):
        _write(on, "0")
    try:
        remove_instance_dir(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise SigsleuthError("cannot remove trace instance %s: it is busy (a reader such as trace_pipe "
                                 "still has it open)" % path)
        raise SigsleuthError("cannot remove trace instance %s: %s" % (path, exc.strerror or exc))
    return True


# ---------------------------------------------------------------- events

# One "field:" line of a format file (an event's, or the ring buffer's header_page): the declaration, the name
# (an array's length apart), then offset, size and signedness where the line gives them.
_FORMAT_FIELD = re.compile(r"field:(?P<decl>[^;]*?)\s*(?P<name>\w+)(?:\[(?P<length>\d*)\])?;"
                           r"(?:\s*offset:(?P<offset>\d+);)?(?:\s*size:(?P<size>\d+);)?(?:\s*signed:(?P<signed>\d);)?")
FormatField = collections.namedtuple("FormatField", "name decl length offset size signed")


def format_fields(format_text):
    """The fields a format file declares, in order: FormatField(name, declaration, array length (None for no
    array, "" for []), offset, size, signed (ints, or None where the line does not give them))."""
    fields = []
    for line in format_text.splitlines():
        match = _FORMAT_FIELD.match(line.strip())
        if match is None:
            continue
        number = [None if match.group(key) is None else int(match.group(key)) for key in ("offset", "size", "signed")]
        fields.append(FormatField(match.group("name"), match.group("decl"), match.group("length"), *number))
    return fields


def signal_field(format_text):
    """Name of the field that holds the signal number, or None."""
    fields = [field.name for field in format_fields(format_text)]
    for name in SIGNAL_FIELD_NAMES:
        if name in fields:
            return name
    return None


def user_string_filters(release=None):
    """Whether this kernel filters syscall events on user-space strings (``field.ustring``)."""
    match = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= USER_STRING_FILTERS_SINCE


def probe_events(tracefs):
    """What this kernel offers of our events.

    Returns ``(signal_fields, missing_required, missing_optional)``: signal_fields maps every present event
    that is filtered by signal to the field holding it; an optional syscall event without such a field counts
    as missing (it could only be enabled unfiltered).
    """
    signal_fields = {}
    missing_required = []
    missing_optional = []
    for event in REQUIRED_EVENTS + OPTIONAL_EVENTS:
        format_text = _read_or_none(os.path.join(tracefs, "events", event, "format"))
        missing = missing_required if event in REQUIRED_EVENTS else missing_optional
        if format_text is None:
            missing.append(event)
        elif event == SIGNAL_EVENT or event in KILL_SYSCALL_EVENTS:
            field = signal_field(format_text)
            if field is None:
                missing.append(event)
            else:
                signal_fields[event] = field
    return signal_fields, missing_required, missing_optional


def missing_for_precision(missing_optional):
    """The events syscall precision needs that this kernel lacks (the opens of cgroup.kill are a bonus)."""
    return [event for event in missing_optional if event in SYSCALL_EVENTS]


def signal_filter(signals, field="sig"):
    """``sig==9 || sig==15`` for [9, 15]."""
    return " || ".join("%s==%d" % (field, number) for number in sorted(set(signals)))


# ---------------------------------------------------------------- settings

def desired_settings(signals, buffer_size_kb=DEFAULT_BUFFER_SIZE_KB, signal_fields=None, missing_optional=(),
                     precision=PRECISION_LIGHT, opens=False):
    """The instance settings sigsleuth wants, as a plain dict comparable with observed_settings().

    signal_fields and missing_optional come from probe_events(); without them every event is assumed present
    with a ``sig`` field. Every event this kernel has is listed, the ones this precision does not use as
    disabled, so that a change of precision takes the others out in place. opens: record opens of cgroup.kill
    (syscall precision, user-string filters).
    """
    if signal_fields is None:
        signal_fields = {event: "sig" for event in (SIGNAL_EVENT,) + KILL_SYSCALL_EVENTS}
    wanted = dict.fromkeys(REQUIRED_EVENTS, NO_FILTER)
    wanted[NEWTASK_EVENT] = NEWTASK_FILTER
    wanted.update(LIGHT_EVENTS)
    if precision == PRECISION_SYSCALL:
        wanted.update(SYSCALL_EVENTS)
        if opens:
            wanted.update(CGROUP_KILL_OPEN_EVENTS)
    events = {}
    for event in REQUIRED_EVENTS + OPTIONAL_EVENTS:
        if event in missing_optional:
            continue
        if event not in wanted:
            events[event] = {"enable": "0", "filter": NO_FILTER}
        elif event in signal_fields:
            events[event] = {"enable": "1", "filter": signal_filter(signals, signal_fields[event])}
        else:
            events[event] = {"enable": "1", "filter": wanted[event]}
    return {
        "trace_clock": TRACE_CLOCK,
        "buffer_size_kb": int(buffer_size_kb),
        "options": dict(OPTIONS),
        "events": events,
        "tracing_on": "1",
    }


def _selected_clock(text):
    match = re.search(r"\[([^\]]+)\]", text or "")
    return match.group(1) if match else None


def _buffer_size(text):
    # "8195", or "X" when the per-CPU sizes differ, or "7 (expanded: 1408)" on the top level before first use.
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None


def _filter_text(text):
    if text is None:
        return None
    # A rejected filter reads back with a caret line and the parse error under it: keep it all so it never
    # compares equal to what we want.
    return text.strip() or NO_FILTER


def observed_settings(instance, events=REQUIRED_EVENTS + OPTIONAL_EVENTS):
    """The instance's current settings in the shape of desired_settings(), or None when it does not exist.

    Events whose directory is missing are left out.
    """
    if not os.path.isdir(instance):
        return None

    def value(name):
        text = _read_or_none(os.path.join(instance, name))
        return None if text is None else text.strip()

    observed_events = {}
    for event in events:
        directory = os.path.join(instance, "events", event)
        if not os.path.isdir(directory):
            continue
        observed_events[event] = {
            "enable": value(os.path.join("events", event, "enable")),
            "filter": _filter_text(_read_or_none(os.path.join(directory, "filter"))),
        }
    return {
        "trace_clock": _selected_clock(_read_or_none(os.path.join(instance, "trace_clock"))),
        "buffer_size_kb": _buffer_size(_read_or_none(os.path.join(instance, "buffer_size_kb"))),
        "options": {name: value(os.path.join("options", name)) for name in OPTIONS},
        "events": observed_events,
        "tracing_on": value("tracing_on"),
    }


def buffer_size_matches(desired_kb, observed_kb):
    """The kernel rounds a buffer size up to whole sub-buffer pages (8192 reads back as 8195)."""
    if observed_kb is None:
        return False
    return desired_kb <= observed_kb <= desired_kb + desired_kb // 100 + 16


def normalise(desired, observed):
    """desired, with the buffer size shown as observed when the kernel's rounding is all that differs.

    ``normalise(desired, observed) == observed`` then means nothing needs to change.
    """
    result = dict(desired)
    if observed and buffer_size_matches(desired["buffer_size_kb"], observed.get("buffer_size_kb")):
        result["buffer_size_kb"] = observed["buffer_size_kb"]
    return result


def apply(instance, desired, observed=None):
    """Write every setting of desired that differs from observed (None: the instance is fresh).

    Order matters: the clock first (changing it clears the buffer), then size and options, then each event's
    filter before its enable so no unfiltered event is recorded, and tracing_on last. Returns the list of
    setting names written.
    """
    observed = observed or {}
    observed_events = observed.get("events") or {}
    written = []

    if observed.get("trace_clock") != desired["trace_clock"]:
        _write(os.path.join(instance, "trace_clock"), desired["trace_clock"])
        written.append("trace_clock")
    if not buffer_size_matches(desired["buffer_size_kb"], observed.get("buffer_size_kb")):
        _write(os.path.join(instance, "buffer_size_kb"), str(desired["buffer_size_kb"]))
        written.append("buffer_size_kb")
    for name, wanted in desired["options"].items():
        if (observed.get("options") or {}).get(name) != wanted:
            _write(os.path.join(instance, "options", name), wanted)
            written.append("options/" + name)
    for event, wanted in desired["events"].items():
        current = observed_events.get(event) or {}
        directory = os.path.join(instance, "events", event)
        if not os.path.isdir(directory):
            raise SigsleuthError("the kernel has no trace event %s (no %s)" % (event.replace("/", ":"), directory))
        # Filter before enable, and disable before clearing a filter: never a moment of unfiltered recording.
        steps = [("filter", "0" if wanted["filter"] == NO_FILTER else wanted["filter"]), ("enable", wanted["enable"])]
        for name, value in steps if wanted["enable"] == "1" else reversed(steps):
            # "0" clears a filter; a rejected filter leaves the parse error in the file and fails the write.
            if current.get(name) != wanted[name]:
                _write(os.path.join(directory, name), value)
                written.append("events/%s/%s" % (event, name))
    if observed.get("tracing_on") != desired["tracing_on"]:
        _write(os.path.join(instance, "tracing_on"), desired["tracing_on"])
        written.append("tracing_on")
    return written


# ---------------------------------------------------------------- loss accounting

def _stat_value(text):
    text = text.strip()
    if re.match(r"^\d+\.\d+$", text):
        seconds, _dot, fraction = text.partition(".")
        # Timestamps are seconds with up to 9 decimals; keep them exact as integer nanoseconds.
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
    try:
        return int(text)
    except ValueError:
        return text


def read_loss_counters(instance):
    """Per-CPU ring buffer statistics of the instance: ``{cpu: {name: value}}``.

    Names are the stats file's, with spaces as underscores: entries, overrun, commit_overrun, bytes,
    dropped_events, read_events; the timestamps become oldest_event_ts_ns and now_ts_ns (trace clock, ns).
    overrun counts events overwritten because the buffer was full; dropped_events those lost otherwise.
    """
    counters = {}
    per_cpu = os.path.join(instance, "per_cpu")
    try:
        names = os.listdir(per_cpu)
    except OSError:
        return counters
    for name in names:
        match = re.match(r"^cpu(\d+)$", name)
        if not match:
            continue
        text = _read_or_none(os.path.join(per_cpu, name, "stats"))
        if text is None:
            continue
        stats = {}
        for line in text.splitlines():
            key, sep, raw = line.partition(":")
            if not sep:
                continue
            key = key.strip().replace(" ", "_")
            if key.endswith("_ts"):
                key += "_ns"
            stats[key] = _stat_value(raw)
        counters[int(match.group(1))] = stats
    return dict(sorted(counters.items()))
