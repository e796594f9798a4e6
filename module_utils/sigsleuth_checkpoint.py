# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The watch drain's persisted lineage: to and from JSON. Standard library only; Python 3.9+.
"""A lineage (live processes, their ancestors, the kills with the ancestry captured at each kill) as JSON.

The drain writes it at a bounded rate so that a restart, and collect, continue from it. Processes are written
once each, by their serial; every reference (parent, a kill's sender, victim, ancestors, the evidence's
current task) is that serial. Only the classes named here are ever rebuilt: nothing in the file can name
code to run.

Not kept: the evidence window of syscall precision (kill-family syscalls in flight for the last moments,
opens of cgroup.kill) - a send right at a restart may be attributed with less precision; the kill says so.
"""

from __future__ import annotations

import itertools
import json
import os

from ansible.module_utils.sigsleuth_attribution import SendEvidence
from ansible.module_utils.sigsleuth_lineage import Kill, Lineage, Process, ProcessAtKill, ProcessKey
from ansible.module_utils.sigsleuth_state import atomic_write
from ansible.module_utils.sigsleuth_trace_parser import TraceStats

CHECKPOINT_FORMAT = 1
RECENT_KEPT = 64  # recent exits (and exited threads) a checkpoint keeps: each is written whole, every flush
RESTART_NOTE = ("the watch drain restarted from its checkpoint around this send: syscall evidence in flight at "
                "the restart was not kept")
_PROCESS_PLAIN = ("comm", "exe", "argv", "uid", "exit_ns", "exited", "source", "known_since_ns", "live_children",
                  "notes", "alive_confirmed", "ppid_hint", "facts_from", "rlimits_from", "ns_pid", "cgroup",
                  "memory_cgroup", "extra", "exec_times", "parent_by_ppid")
_KILL_PLAIN = ("ts_ns", "signal", "code", "errno", "result", "group", "sender_tid", "victim_tid", "mechanism",
               "origin", "evidence", "count", "syscall_args", "notes", "oom", "audit", "attribution_note",
               "mechanism_candidates", "trace_missed")
_SEND_PLAIN = ("signal", "si_code", "current_tid", "syscalls_traced", "opens_traced", "syscall", "syscall_args",
               "thread_exiting", "opened_cgroup_kill", "victim_is_current", "victim_rlimit", "victim_rlimit_from",
               "oom_marked", "audit", "witnesses")
_STATS_PLAIN = ("bytes", "lines", "events", "malformed", "skipped_bytes", "foreign", "lost_events", "last_ts")


# ---------------------------------------------------------------- out

class _Writer:
    """Collects every process a lineage can still name, each once."""

    def __init__(self):
        self.processes = {}

    def ref(self, proc):
        if proc is None:
            return None
        serial = proc.key[2]
        while proc is not None and proc.key[2] not in self.processes:
            self.processes[proc.key[2]] = None  # reserved first: a corrupt cycle ends here
            self.processes[proc.key[2]] = self._process(proc)
            proc = proc.parent
        return serial

    def _process(self, proc):
        entry = {name: getattr(proc, name) for name in _PROCESS_PLAIN}
        entry["key"] = list(proc.key)
        entry["rlimits"] = sorted(proc.rlimits)
        entry["parent"] = proc.parent.key[2] if proc.parent is not None else None
        return entry

    def at_kill(self, at_kill):
        return None if at_kill is None else [self.ref(at_kill.process), at_kill.comm, at_kill.exe, at_kill.argv]

    def kill(self, kill):
        entry = {name: getattr(kill, name) for name in _KILL_PLAIN}
        entry["sender"] = self.ref(kill.sender)
        entry["victim"] = self.ref(kill.victim)
        entry["ancestry"] = [self.at_kill(ancestor) for ancestor in kill.ancestry]
        entry["sender_at_kill"] = self.at_kill(kill.sender_at_kill)
        entry["trigger"] = None if kill.trigger is None else [self.ref(kill.trigger[0]), kill.trigger[1]]
        entry["audit_facts"] = [[self.ref_key(key), facts] for key, facts in kill.audit_facts.items()]
        send = kill.send
        entry["send"] = None if send is None else dict(
            {name: getattr(send, name) for name in _SEND_PLAIN}, current=self.ref(send.current))
        return entry

    @staticmethod
    def ref_key(key):
        return list(key)


def lineage_to_dict(lineage, stats=None, extra=None):
    """The lineage (and the parser's counters) as a JSON-able dict."""
    writer = _Writer()
    kills = [writer.kill(kill) for kill in lineage.kills]
    index = {id(kill): number for number, kill in enumerate(lineage.kills)}
    last_kill = [[index[id(kill)], sig] for (_key, sig), kill in lineage._last_kill.items() if id(kill) in index]
    data = {
        "format": CHECKPOINT_FORMAT,
        "signals": sorted(lineage.signals),
        "precision": "syscall" if lineage.syscalls_traced else "light",
        "opens_traced": lineage.opens_traced,
        "memory_hierarchy": lineage.memory_hierarchy,
        "snapshot_time_ns": lineage.snapshot_time_ns,
        "by_pid": [[pid, writer.ref(proc)] for pid, proc in lineage.by_pid.items()],
        "recently_exited": [[pid, writer.ref(lineage.exited_process(pid))]
                            for pid, _proc in _newest(lineage.recently_exited)],
        "exited_tids": _newest(lineage.exited_tids),
        "thread_group": list(lineage.thread_group.items()),
        "clone_flags": list(lineage.clone_flags.items()),
        "kills": kills,
        "last_kill": last_kill,
        "stats": stats_to_dict(stats) if stats is not None else None,
        "extra": extra or {},
    }
    data["next_serial"] = max(writer.processes, default=0) + 1
    data["processes"] = [entry for entry in writer.processes.values() if entry is not None]
    return data


def _newest(recent):
    """The newest RECENT_KEPT entries of a dict of recent exits (newest last): only a send right after an exit
    reads them, and the rest would make every checkpoint as large as the lineage's whole memory of exits."""
    items = list(itertools.islice(reversed(recent.items()), RECENT_KEPT))
    items.reverse()
    return [list(item) for item in items]


def stats_to_dict(stats):
    entry = {name: getattr(stats, name) for name in _STATS_PLAIN}
    entry["lost_markers"] = [list(marker) for marker in stats.lost_markers[-256:]]
    entry["cpu_buffer_started"] = sorted(stats.cpu_buffer_started)
    entry["first_ts_per_cpu"] = [[cpu, ts] for cpu, ts in stats.first_ts_per_cpu.items()]
    return entry


# ---------------------------------------------------------------- in

def stats_from_dict(entry):
    stats = TraceStats()
    if not entry:
        return stats
    for name in _STATS_PLAIN:
        setattr(stats, name, entry.get(name, getattr(stats, name)))
    stats.lost_markers = [tuple(marker) for marker in entry.get("lost_markers") or ()]
    stats.cpu_buffer_started = set(entry.get("cpu_buffer_started") or ())
    stats.first_ts_per_cpu = dict(entry.get("first_ts_per_cpu") or ())
    return stats


def _processes(entries):
    table = {}
    for entry in entries:
        key = ProcessKey(*entry["key"])
        proc = Process(key, None, entry["comm"], entry["exe"], entry["source"], entry["known_since_ns"])
        for name in _PROCESS_PLAIN:
            value = entry.get(name)
            if name == "parent_by_ppid" and value is not None:
                value = tuple(value)
            setattr(proc, name, value if value is not None or name not in ("notes", "extra", "facts_from")
                    else ([] if name == "notes" else {}))
        proc.rlimits = frozenset(entry.get("rlimits") or ())
        table[key.serial] = (proc, entry.get("parent"))
    for proc, parent in table.values():
        proc.parent = table[parent][0] if parent in table else None
    return {serial: proc for serial, (proc, _parent) in table.items()}


def _kill(entry, procs):
    def at_kill(value):
        return None if value is None else ProcessAtKill(procs[value[0]], value[1], value[2], value[3])
    kill = Kill(**{name: entry.get(name) for name in _KILL_PLAIN})
    kill.sender = procs.get(entry["sender"]) if entry.get("sender") is not None else None
    kill.victim = procs[entry["victim"]]
    kill.ancestry = [at_kill(value) for value in entry.get("ancestry") or ()]
    kill.sender_at_kill = at_kill(entry.get("sender_at_kill"))
    trigger = entry.get("trigger")
    kill.trigger = None if trigger is None else (procs[trigger[0]], trigger[1])
    kill.audit_facts = {ProcessKey(*key): facts for key, facts in entry.get("audit_facts") or ()}
    send = entry.get("send")
    if send is not None:
        kill.send = SendEvidence()
        for name in _SEND_PLAIN:
            setattr(kill.send, name, send.get(name))
        kill.send.witnesses = list(kill.send.witnesses or ())
        kill.send.current = procs.get(send.get("current")) if send.get("current") is not None else None
    return kill


def lineage_from_dict(data, settings=None):
    """(Lineage, TraceStats, extra) rebuilt from lineage_to_dict's output. Raises ValueError when it is not one.

    settings (signals, precision, opens_traced) override the checkpoint's: the instance was re-armed with
    other signals or another precision since, and the lineage goes on with what is traced now."""
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError("not a sigsleuth watch checkpoint (format %r)" % (data or {}).get("format"))
    data = dict(data, **(settings or {}))
    try:
        lineage = Lineage(data["signals"], snapshot_time_ns=data.get("snapshot_time_ns"),
                          memory_hierarchy=data.get("memory_hierarchy"), precision=data.get("precision", "light"),
                          opens_traced=data.get("opens_traced", False),
                          serials=itertools.count(data.get("next_serial", 1)))
        procs = _processes(data.get("processes") or ())
        lineage.by_pid = {pid: procs[serial] for pid, serial in data.get("by_pid") or ()}
        for pid, serial in data.get("recently_exited") or ():
            lineage.recently_exited[pid] = procs[serial]
        for tid, ts in data.get("exited_tids") or ():
            lineage.exited_tids[tid] = ts
        lineage.thread_group = dict(data.get("thread_group") or ())
        lineage.clone_flags = dict(data.get("clone_flags") or ())
        lineage.kills = [_kill(entry, procs) for entry in data.get("kills") or ()]
        for index, sig in data.get("last_kill") or ():
            kill = lineage.kills[index]
            lineage._last_kill[(kill.victim.key, sig)] = kill
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError("corrupt sigsleuth watch checkpoint: %r" % (exc,))
    return lineage, stats_from_dict(data.get("stats")), data.get("extra") or {}


# ---------------------------------------------------------------- files

def save(path, lineage, stats=None, extra=None):
    atomic_write(path, json.dumps(lineage_to_dict(lineage, stats, extra), separators=(",", ":")))


def load(path, settings=None):
    """(Lineage, TraceStats, extra) from the checkpoint file; None when there is none."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError("cannot read the watch checkpoint %s: %s" % (path, exc))
    return lineage_from_dict(data, settings)


def exists(path):
    return os.path.isfile(path)
