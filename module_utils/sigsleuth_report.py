# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The versioned report: its sources and its kills as plain dicts. Standard library only; Python 3.9+.
"""Build the report dict described by schema/report.schema.json.

SCHEMA_VERSION follows semver: a minor bump adds optional fields, a major bump would break readers.
"""

from __future__ import annotations

import functools
import os
import re

from ansible.module_utils.sigsleuth_clock import iso_utc
from ansible.module_utils.sigsleuth_lineage import RESULTS
from ansible.module_utils.sigsleuth_loss import kill_gaps
from ansible.module_utils.sigsleuth_vocabulary import SOURCE_AUDIT, decode_name, name_bytes, signal_name

SCHEMA_VERSION = "1.5.0"
# argv the watch drain read from /proc right after an exec (same incarnation) is labelled so.
ARGV_FROM_PROC = "proc_after_exec"
# What made the report: the collection and its version, as galaxy.yml has it (tests/unit/test_collection_version.py).
PRODUCER = {"name": "sigsleuth.sigsleuth", "version": "1.0.0"}
# What audit alone never records: these kills are missing from an audit-only report, not "unknown".
AUDIT_BLIND_SPOTS = ("audit alone records kill-family syscalls only: kills by cgroup.kill, the OOM killer, "
                     "parent-death signals and CPU-time limits leave no audit record and are missing from this "
                     "report; arm ftrace to see them")


# ---------------------------------------------------------------- kills

def process_dict(proc, clock, at_kill=None, tid=None, facts=None, resolve_exe=True):
    """One process as the report shows it.

    `at_kill` is the ProcessAtKill of the moment of the kill; `facts` are what audit knew of it then.
    `resolve_exe`: resolve the exec'd path on this machine (not offline, where it is another machine's path).
    """
    _key, comm, exe, argv = at_kill if at_kill is not None else proc.at_kill()
    entry = {
        "pid": proc.pid,
        "comm": comm,
        "exe": resolved_exe(exe) if resolve_exe else exe,
        "argv": argv,
        "uid": proc.uid,
        "started": clock.iso(proc.start_ns),
        "exited": proc.exited,
        "exited_at": clock.iso(proc.exit_ns),
        "source": proc.source,
        "facts_from": {},
        "notes": list(proc.notes),
        "ns_pid": proc.ns_pid,
        "cgroup": main_cgroup(proc),
    }
    cgroups = {name: path for name, path in (("unified", proc.cgroup), ("memory", proc.memory_cgroup)) if path}
    if cgroups:
        entry["cgroups"] = cgroups
    if entry["exe"] != exe:
        entry["exec_path"] = exe
    container = container_id(entry["cgroup"])
    if container:
        entry["container_id"] = container
    entry.update(proc.extra)
    facts_from = dict(proc.facts_from)
    for key, value in (facts or {}).items():
        entry[key] = value
        facts_from[key] = SOURCE_AUDIT
    entry["facts_from"] = {key: source for key, source in facts_from.items()
                           if source and entry.get(key) is not None}
    if entry["facts_from"].get("argv") == ARGV_FROM_PROC:
        entry["argv_from"] = ARGV_FROM_PROC  # read from /proc right after the exec the drain saw (since 1.4.0)
    if tid is not None:
        entry["tid"] = tid
    return entry


def main_cgroup(proc):
    """The cgroup that says most: the unified (v2) path unless it is the root and a v1 memory path is known."""
    if proc.cgroup not in (None, "/") or not proc.memory_cgroup:
        return proc.cgroup
    return proc.memory_cgroup


@functools.lru_cache(maxsize=4096)
def resolved_exe(path):
    """The file an exec'd path names, symlinks resolved (/bin/sh -> /usr/bin/dash), as /proc/PID/exe and audit
    show it. The trace records the path as passed to exec; a path that no longer exists is kept as it is.
    The path is looked up by the bytes its text stands for (vocabulary.decode_name's encoding)."""
    if not path or not path.startswith("/"):
        return path
    raw = name_bytes(path)
    if not os.path.exists(raw):
        return path
    return decode_name(os.path.realpath(raw))


def kill_dict(kill, clock, losses, resolve_exe=True):
    """One kill record with its ancestry and the plain-language gaps that apply to it."""
    facts = kill.audit_facts
    victim = process_dict(kill.victim, clock, tid=kill.victim_tid, facts=facts.get(kill.victim.key),
                          resolve_exe=resolve_exe)
    sender = None
    if kill.sender is not None:
        sender = process_dict(kill.sender, clock, at_kill=kill.sender_at_kill, tid=kill.sender_tid,
                              facts=facts.get(kill.sender.key), resolve_exe=resolve_exe)
    ancestry = [process_dict(ancestor.process, clock, at_kill=ancestor, facts=facts.get(ancestor.process.key),
                             resolve_exe=resolve_exe)
                for ancestor in kill.ancestry]
    record = {
        "time": clock.iso(kill.ts_ns),
        "signal": {"number": kill.signal, "name": signal_name(kill.signal)},
        "victim": victim,
        "sender": sender,
        "origin": kill.origin,
        "mechanism": kill.mechanism,
        "si_code": kill.code,
        "result": RESULTS.get(kill.result, str(kill.result)),
        "count": kill.count,
        "evidence": list(kill.evidence),
        "ancestry": ancestry,
        "gaps": kill_gaps(kill, losses, clock),
    }
    # Audit alone records neither the siginfo code nor the delivery result: left out, not guessed.
    if kill.code is None:
        del record["si_code"]
    if kill.result is None:
        del record["result"]
    if kill.mechanism_candidates:
        record["mechanism_candidates"] = list(kill.mechanism_candidates)
    if kill.syscall_args is not None:
        record["syscall"] = dict(kill.syscall_args)
    if kill.trigger is not None:
        record["trigger"] = process_dict(kill.trigger[0], clock, tid=kill.trigger[1], resolve_exe=resolve_exe)
    if kill.oom is not None:
        record["oom"] = dict(kill.oom)
    if kill.audit is not None:
        audit = dict(kill.audit)
        audit["time"] = iso_utc(audit.pop("time_ns"))
        record["audit"] = audit
    return record


_CONTAINER_ID = re.compile(r"(?:docker|cri-containerd|crio|libpod|containerd)[-/:]([0-9a-f]{64})|/([0-9a-f]{64})(?:\.scope)?$")


def container_id(cgroup):
    """The 64-hex container id in a docker/containerd/cri-o/podman cgroup path, when there is one."""
    if not cgroup:
        return None
    m = _CONTAINER_ID.search(cgroup)
    return (m.group(1) or m.group(2)) if m else None


# ---------------------------------------------------------------- sources

def not_armed(reason):
    return {"armed": False, "reason": reason}


def snapshot_source(section, clock, error=None):
    if section is None:
        return not_armed("no arm-time process snapshot was taken")
    source = {"armed": True}
    if error:
        source["error"] = error
    else:
        source.update(taken_at=iso_utc(section.get("taken_at_ns")), processes=section.get("count"))
    return source


def ftrace_source(section, stats, per_cpu, loss, clock, error=None):
    """sources.ftrace: the instance, what the parser read, the per-CPU counters and the loss statement."""
    source = {
        "armed": True,
        "instance": section["instance"],
        "clock": section.get("clock"),
        "buffer_size_kb": section.get("buffer_size_kb"),
        "precision": section.get("precision", "syscall"),
        "missing_optional_events": section.get("missing_optional_events", []),
    }
    if error:
        source["error"] = error
    source.update(stats.as_dict())
    source["per_cpu"] = {}
    for cpu, counters in per_cpu.items():
        oldest = counters.get("oldest_event_ts_ns")
        source["per_cpu"][str(cpu)] = {
            "entries": counters.get("entries"),
            "overrun": counters.get("overrun", 0),
            "commit_overrun": counters.get("commit_overrun", 0),
            "dropped_events": counters.get("dropped_events", 0),
            "oldest_event_time": clock.iso(oldest) if isinstance(oldest, int) else None,
        }
    first = list(stats.first_ts_per_cpu.values())
    source["oldest_event_time"] = clock.iso(min(first)) if first else None
    source["loss"] = loss.statement()
    source["loss_before"] = clock.iso(loss.until_ns)
    return source


def audit_source(section, stats, loss, lineage_mode, status=None, status_error=None, only_audit_saw=None):
    """sources.audit: the rules, the log read, the kernel's counters and the loss statement."""
    source = {"armed": True, "mode": "lineage" if lineage_mode else "enrich", "log_file": section.get("log_file"),
              "rules": len(section.get("rules") or ()), "lost_at_arm": section.get("lost_at_arm"),
              "backlog_at_arm": section.get("backlog_at_arm")}
    if status_error:
        source["status_error"] = status_error
    elif status is not None:
        source.update(lost_at_collect=status.get("lost"), backlog_at_collect=status.get("backlog"),
                      enabled=status.get("enabled"))
    if lineage_mode:
        source["cannot_see"] = AUDIT_BLIND_SPOTS
    else:
        source["kills_only_audit_saw"] = only_audit_saw
    source.update(stats.as_dict())
    source["events_read"] = stats.events
    source["lines_skipped"] = stats.malformed_lines + stats.truncated_lines
    source["oldest_event_time"] = iso_utc(stats.earliest_ns)
    source["loss"] = loss.statement()
    return source


def clock_source(trace_clock, offset_at_arm_ns, offset_at_collect_ns, step):
    return {"trace_clock": trace_clock, "offset_at_arm_ns": offset_at_arm_ns,
            "offset_at_collect_ns": offset_at_collect_ns, "step": step}


# ---------------------------------------------------------------- the report

def build_report(host, armed_at_ns, collected_at_ns, signals, sources, kills, clock, losses, resolve_exe=True):
    return {
        "schema_version": SCHEMA_VERSION,
        "host": host,
        "armed_at": iso_utc(armed_at_ns),
        "collected_at": iso_utc(collected_at_ns),
        "signals": list(signals),
        "sources": sources,
        "kills": [kill_dict(kill, clock, losses, resolve_exe) for kill in kills],
        "producer": dict(PRODUCER),
    }
