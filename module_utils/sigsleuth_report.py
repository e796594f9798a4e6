# -*- coding: utf-8 -*-
# The versioned report: lineage kills -> plain dicts. Standard library only; Python 3.9+.
"""Build the report dict described by schema/report.schema.json.

SCHEMA_VERSION follows semver: a minor bump adds optional fields, a major bump would break readers.
"""

from __future__ import annotations

import functools
import os
import re

from ansible.module_utils.sigsleuth_common import iso_utc, signal_name
from ansible.module_utils.sigsleuth_lineage import RESULTS, SOURCE_UNSEEN

SCHEMA_VERSION = "1.0.0"


class Clock:
    """Boot-clock ns -> wall-clock ISO strings with the offset measured at arm time."""

    def __init__(self, offset_ns):
        self.offset_ns = offset_ns

    def iso(self, boot_ns):
        if boot_ns is None or self.offset_ns is None:
            return None
        return iso_utc(boot_ns + self.offset_ns)


def process_dict(proc, clock, identity=None, tid=None, facts=None):
    """One process as the report shows it.

    `identity` is (comm, exe, argv) as they were at the kill; `facts` are what audit knew of it then.
    """
    comm, exe, argv = identity if identity is not None else (proc.comm, proc.exe, proc.argv)
    entry = {
        "pid": proc.pid,
        "comm": comm,
        "exe": resolved_exe(exe),
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
        facts_from[key] = "audit"
    entry["facts_from"] = {key: source for key, source in facts_from.items()
                           if source and entry.get(key) is not None}
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
    show it. The trace records the path as passed to exec; a path that no longer exists is kept as it is."""
    if not path or not path.startswith("/") or not os.path.exists(path):
        return path
    return os.path.realpath(path)


def kill_dict(kill, clock, loss):
    """One kill record with its ancestry and the plain-language gaps that apply to it."""
    facts = kill.audit_facts or {}
    victim = process_dict(kill.victim, clock, tid=kill.victim_tid, facts=facts.get(id(kill.victim)))
    sender = None
    if kill.sender is not None:
        sender = process_dict(kill.sender, clock, identity=kill.sender_identity, tid=kill.sender_tid,
                              facts=facts.get(id(kill.sender)))
    ancestry = [process_dict(proc, clock, identity=(comm, exe, argv), facts=facts.get(id(proc)))
                for proc, comm, exe, argv in kill.chain]
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
        "gaps": chain_gaps(kill, loss, clock),
    }
    # Audit alone records neither the siginfo code nor the delivery result: left out, not guessed.
    if kill.code is None:
        del record["si_code"]
    if kill.result is None:
        del record["result"]
    if kill.syscall_args is not None:
        record["syscall"] = dict(kill.syscall_args)
    if kill.trigger is not None:
        record["trigger"] = process_dict(kill.trigger[0], clock, tid=kill.trigger[1])
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


def chain_gaps(kill, loss, clock):
    """Why this kill's sender, ancestry or victim may be incomplete or unverified."""
    gaps = list(kill.notes)
    members = ([kill.sender] if kill.sender is not None else []) + [proc for proc, _, _, _ in kill.chain]
    top = members[-1] if members else None
    if top is not None:
        if top.source == SOURCE_UNSEEN:
            why = loss.describe() if loss.until_ns is not None else "it started before arming and was not in the arm-time snapshot"
            gaps.append("the chain stops at pid %d: %s (%s)" % (top.pid, "its parent is unknown", why))
        elif top.parent is None and top.pid != 1 and top.ppid_hint:
            gaps.append("the chain stops at pid %d (%s): its parent pid %d at arm time was not in the snapshot"
                        % (top.pid, top.comm, top.ppid_hint))
    if loss.until_ns is not None:
        for proc in [kill.victim] + members:
            if proc.known_since_ns is not None and proc.known_since_ns <= loss.until_ns \
                    and not proc.alive_confirmed and proc.source != SOURCE_UNSEEN:
                gaps.append("pid %d (%s) was identified from records older than lost trace events; %s; "
                            "it may have been another process reusing that pid"
                            % (proc.pid, proc.comm, loss.describe()))
        if kill.ts_ns <= loss.until_ns:
            gaps.append("this kill happened while trace events were being lost (%s)" % loss.describe())
    return gaps


def build_report(host, armed_at_ns, collected_at_ns, signals, sources, kills, clock, loss):
    return {
        "schema_version": SCHEMA_VERSION,
        "host": host,
        "armed_at": iso_utc(armed_at_ns),
        "collected_at": iso_utc(collected_at_ns),
        "signals": list(signals),
        "sources": sources,
        "kills": [kill_dict(kill, clock, loss) for kill in kills],
    }
