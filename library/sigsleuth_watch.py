#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: the watch drain - the trace consumed as it is written, so history outlives the ring buffer.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_watch
short_description: Run, stop or query the sigsleuth watch drain of a host
description:
  - The drain is a detached process (no package, unit file or agent is installed - the module daemonizes
    itself) that reads the armed trace instance's C(trace_pipe) as it is written and feeds the lineage
    engine, keeping only live processes, their ancestors and the kills with the ancestry captured at each
    kill. It persists that to the state dir atomically at a bounded rate, so collect reads a small state
    instead of the whole buffer, and history is no longer limited by the ring buffer's size.
  - Right after each exec it reads C(/proc/PID/cmdline) and C(/proc/PID/cgroup), kept only when
    C(/proc/PID/stat) proves the same incarnation; the report labels that argv C(proc_after_exec).
  - Its identity (pid and C(/proc) start time) is recorded in the C(watch) section of C(<state_dir>/state.json);
    it is stopped only by that identity, never by name.
  - Needs the trace armed first (M(sigsleuth.sigsleuth.sigsleuth_trace)) and, for a complete lineage, the
    snapshot (M(sigsleuth.sigsleuth.sigsleuth_snapshot)).
version_added: "1.0.0"
author:
  - sigsleuth developers (@sigsleuth)
options:
  state:
    description:
      - V(running) starts the drain unless the recorded one is alive; one that died (killed, crashed) is
        restarted from its last checkpoint and the restart counted.
      - V(stopped) stops it (it flushes first) and keeps its files, so collect still reads them.
      - V(absent) stops it and removes its files and its state section.
      - V(query) reads its status and the kills seen so far; it changes nothing.
    type: str
    choices: [running, stopped, absent, query]
    default: running
  state_dir:
    description: Directory of the state file; the drain keeps its files there too.
    type: path
    default: /var/lib/sigsleuth
  flush_interval:
    description: Seconds between two checkpoints of the drain (a new kill is persisted within 0.2 s).
    type: float
    default: 2.0
  victim_comm:
    description: With O(state=query), only the kills of victims with this comm.
    type: str
  victim_pid:
    description: With O(state=query), only the kills of this victim pid.
    type: int
requirements:
  - Root on the target (tracefs and the state dir).
attributes:
  check_mode:
    support: full
    description: Says whether the drain would be started or stopped, and starts or stops nothing.
  diff_mode:
    support: none
    description: Nothing to diff; RV(drain) says what runs.
  platform:
    platforms: linux
    support: full
    description: Linux only (tracefs, C(/proc)).
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_trace
  - module: sigsleuth.sigsleuth.sigsleuth_snapshot
  - module: sigsleuth.sigsleuth.sigsleuth_audit
  - module: sigsleuth.sigsleuth.sigsleuth_facts
"""

EXAMPLES = r"""
- name: Start the watch drain (after the trace and the snapshot are armed)
  sigsleuth_watch:
    state: running

- name: Has the agent been killed yet?
  sigsleuth_watch:
    state: query
    victim_comm: agent
  register: watched

- name: Remove the drain and its files
  sigsleuth_watch:
    state: absent
"""

RETURN = r"""
running:
  description: Whether the recorded drain is alive and provably the same process (pid and start time).
  returned: always
  type: bool
drain:
  description:
    - The drain - C(pid), C(started_at_ns), C(stopped_at_ns), C(crashed) (it died without being stopped),
      C(crash_reason), C(restarts), C(events), C(lost_events), C(overrun), C(kills), C(live_processes),
      C(argv_caught), C(argv_missed), C(last_flush_ns), C(rss_kb); times are CLOCK_REALTIME ns.
  returned: always
  type: dict
  sample: {running: true, pid: 4242, restarts: 0, events: 120034, lost_events: 0, kills: 1}
kills:
  description:
    - With O(state=query), the kills seen so far that match the victim, from the drain's small kill index (its
      newest 1000) - C(time) (ISO UTC), C(signal) (name), C(victim) and C(sender) (each C(pid), C(comm); the
      sender null when the kernel sent it), C(mechanism), C(count).
  returned: when state=query
  type: list
  elements: dict
  sample: [{time: "2026-12-02T15:00:00.000000Z", signal: SIGKILL, victim: {pid: 10, comm: agent},
            sender: {pid: 12, comm: kill}}]
kills_total:
  description: With O(state=query), how many kills the drain has seen in all.
  returned: when state=query
  type: int
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_detach import DetachError
from ansible.module_utils.sigsleuth_drain import WatchFiles, read_json
from ansible.module_utils.sigsleuth_state import SECTION_FTRACE, SECTION_WATCH, StateStore
from ansible.module_utils.sigsleuth_vocabulary import STATE_DIR
from ansible.module_utils.sigsleuth_watch_control import (
    drain_alive, drain_summary, matching_kills, remove_files, start, stop_drain, traced_settings,
)


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="running", choices=["running", "stopped", "absent", "query"]),
            state_dir=dict(type="path", default=STATE_DIR),
            flush_interval=dict(type="float", default=2.0),
            victim_comm=dict(type="str"),
            victim_pid=dict(type="int"),
        ),
        mutually_exclusive=[("victim_comm", "victim_pid")],
        supports_check_mode=True,
    )


def observe(module):
    store = StateStore(module.params["state_dir"])
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg="%s; move it aside to start afresh" % exc)
    sections = {} if store.is_stale(data) else data
    section = sections.get(SECTION_WATCH)
    alive = drain_alive(section)
    status = read_json(WatchFiles(module.params["state_dir"]).status) if section else None
    return store, sections, section, alive, status


def result(section, status, alive, **more):
    return dict(running=alive, drain=drain_summary(section, status, alive), **more)


def ensure_running(module, store, sections, section, alive, status):
    traced = traced_settings(sections.get(SECTION_FTRACE) or {})
    if alive and section.get("traced") != traced and not module.check_mode:
        # Re-armed with other signals or another precision: the drain goes on from its checkpoint with them.
        try:
            stop_drain(section)
        except (OSError, DetachError) as exc:
            module.fail_json(msg="cannot restart the watch drain: %s" % exc, **result(section, status, alive))
        alive = False
    elif alive and section.get("traced") != traced:
        module.exit_json(changed=True, msg="would restart the drain for what is traced now",
                         **result(section, status, alive))
    if alive:
        module.exit_json(changed=False, msg="the drain (pid %d) is running" % section["pid"],
                         **result(section, status, alive))
    if sections.get(SECTION_FTRACE, {}).get("armed_at_ns") is None:
        if module.check_mode:  # an arm in check mode armed no trace either
            module.exit_json(changed=True, msg="would start the drain once the trace is armed",
                             **result(section, status, alive))
        module.fail_json(msg="the trace is not armed in %s: arm it (sigsleuth_trace) before starting the drain"
                             % store.path, **result(section, status, alive))
    # A drain that ran before on this boot (now dead, or stopped) is restarted from its checkpoint.
    restarts = (section.get("restarts", 0) + 1) if section else 0
    if module.check_mode:
        module.exit_json(changed=True, msg="would start the drain", **result(section, status, alive))
    try:
        if section is None:
            # Files without a section are from an earlier boot, or a disarm that did not finish: never restored.
            remove_files(module.params["state_dir"])
        new = start(module.params["state_dir"], sections, restarts, module.params["flush_interval"])
        store.put(SECTION_WATCH, new)
    except (OSError, DetachError, ValueError) as exc:
        module.fail_json(msg="cannot start the watch drain: %s" % exc, state_dir=module.params["state_dir"],
                         **result(section, status, alive))
    status = read_json(WatchFiles(module.params["state_dir"]).status)
    module.exit_json(changed=True, msg="started the drain (pid %d)" % new["pid"], **result(new, status, True))


def ensure_stopped(module, store, section, alive, status, remove):
    files = [path for path in WatchFiles(module.params["state_dir"]).all() if remove and _exists(path)]
    if not alive and not (remove and (section or files)):
        module.exit_json(changed=False, msg="no drain running", **result(section, status, alive))
    if module.check_mode:
        module.exit_json(changed=True, msg="would stop the drain" + (" and remove its files" if remove else ""),
                         **result(section, status, alive))
    try:
        if alive:
            stop_drain(section)
        if remove:
            remove_files(module.params["state_dir"])
            store.drop(SECTION_WATCH)
        else:
            store.put(SECTION_WATCH, dict(section, stopped_at_ns=time.time_ns()))
    except (OSError, DetachError) as exc:
        module.fail_json(msg="cannot stop the watch drain: %s" % exc, **result(section, status, alive))
    status = read_json(WatchFiles(module.params["state_dir"]).status)
    stopped = "stopped the drain (pid %d)" % section["pid"] if alive else "the drain was not running"
    module.exit_json(changed=True, msg=stopped + ("; removed its files" if remove else ""),
                     **result(None if remove else section, status, False))


def _exists(path):
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def query(module, section, alive, status):
    kills, total = matching_kills(module.params["state_dir"], module.params["victim_comm"],
                                  module.params["victim_pid"])
    module.exit_json(changed=False, kills=kills, kills_total=total,
                     msg="the drain is %s; %d matching kills" % ("running" if alive else "not running", len(kills)),
                     **result(section, status, alive))


def run_module(module):
    if os.geteuid() != 0:
        module.fail_json(msg="sigsleuth_watch must run as root (it reads tracefs and writes %s); connect as root or "
                             "set become: true" % module.params["state_dir"])
    store, sections, section, alive, status = observe(module)
    wanted = module.params["state"]
    if wanted == "query":
        query(module, section, alive, status)
    elif wanted == "running":
        ensure_running(module, store, sections, section, alive, status)
    else:
        ensure_stopped(module, store, section, alive, status, remove=wanted == "absent")


def main():
    run_module(build_module())


if __name__ == "__main__":
    main()
