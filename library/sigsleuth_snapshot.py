#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: the arm-time snapshot of the process table.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_snapshot
short_description: Keep an arm-time snapshot of the process table for sigsleuth
description:
  - Writes every live process (pid, ppid, start time, comm, exe, argv, uid, threads, namespace pid, cgroups)
    as JSON lines to C(<state_dir>/snapshot.jsonl), so that ancestors which started before arming, and exit
    before collection, can still be named in a report.
  - Take it after the trace is armed (M(sigsleuth.sigsleuth.sigsleuth_trace)); then every process is either in
    the snapshot or its fork is in the trace.
  - Records the snapshot in the C(snapshot) section of C(<state_dir>/state.json). A snapshot from the current
    boot is kept as it is; one from an earlier boot is replaced.
version_added: "1.0.0"
author:
  - sigsleuth developers (@sigsleuth)
options:
  state:
    description:
      - V(present) takes the snapshot unless one from this boot exists; V(absent) deletes it and its record.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description:
      - Directory of the snapshot and the state file (created 0700 when missing; removed at V(absent) when
        sigsleuth created it and nothing else is recorded).
    type: path
    default: /var/lib/sigsleuth
requirements:
  - Root on the target, to read every process's C(exe) and to write the state directory.
attributes:
  check_mode:
    support: full
    description:
      - Can run in check_mode and return changed status prediction without modifying target.
      - Check mode does not read the process table, so where a snapshot would be taken RV(count) and
        RV(taken_at_ns) are not returned.
  diff_mode:
    support: full
    description: Returns the recorded snapshot (path, time taken, number of processes) before and after.
  platform:
    platforms: linux
    support: full
    description: Linux only (reads C(/proc)).
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_trace
  - module: sigsleuth.sigsleuth.sigsleuth_audit
  - module: sigsleuth.sigsleuth.sigsleuth_facts
  - module: sigsleuth.sigsleuth.sigsleuth_watch
"""

EXAMPLES = r"""
- name: Snapshot the process table (after arming the trace)
  sigsleuth_snapshot:

- name: Remove the snapshot
  sigsleuth_snapshot:
    state: absent
"""

RETURN = r"""
path:
  description: The snapshot file (also on failure to write or remove it).
  returned: always
  type: str
  sample: /var/lib/sigsleuth/snapshot.jsonl
count:
  description: Number of processes in the snapshot.
  returned: when state=present and not in check mode, or when a snapshot is kept
  type: int
  sample: 142
taken_at_ns:
  description: Wall clock (CLOCK_REALTIME, ns) when the snapshot was taken.
  returned: when state=present and not in check mode, or when a snapshot is kept
  type: int
  sample: 1795676460123456789
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_procfs import take_snapshot
from ansible.module_utils.sigsleuth_state import StateStore
from ansible.module_utils.sigsleuth_vocabulary import BOOT_ID_PATH, PROC, STATE_DIR

SECTION = "snapshot"
SNAPSHOT_FILE = "snapshot.jsonl"

# Module-level so unit tests can point them at a fake tree.
PATHS = {"boot_id": BOOT_ID_PATH, "proc": PROC}


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            state_dir=dict(type="path", default=STATE_DIR),
        ),
        supports_check_mode=True,
    )


def describe(section):
    return {key: section.get(key) for key in ("path", "taken_at_ns", "count")} if section else {}


def take(module, store, path, section):
    if section and section.get("path") == path and os.path.isfile(path):
        module.exit_json(changed=False, msg="snapshot of this boot kept: %s" % path, **describe(section))
    if module.check_mode:
        module.exit_json(changed=True, path=path, msg="would take a snapshot of the process table into %s" % path,
                         diff=dict(before=describe(section), after={"path": path}))
    try:
        if not os.path.isdir(store.state_dir):
            # StateStore.put creates the directory (and records that it did) on first use.
            store.put(SECTION, {"path": path, "taken_at_ns": None, "count": None})
        taken_at_ns = time.time_ns()
        count = take_snapshot(path, PATHS["proc"])
        record = {"path": path, "taken_at_ns": taken_at_ns, "count": count}
        store.put(SECTION, record)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot take the process snapshot into %s: %s" % (path, exc), path=path)
    module.exit_json(changed=True, msg="took a snapshot of %d processes into %s" % (count, path),
                     diff=dict(before=describe(section), after=record), **record)


def remove(module, store, data, path):
    recorded = (data or {}).get(SECTION)
    files = sorted({path} | ({recorded["path"]} if recorded and recorded.get("path") else set()))
    present = [name for name in files if os.path.lexists(name)]
    if not recorded and not present:
        module.exit_json(changed=False, path=path, msg="no snapshot: nothing to remove")
    result = dict(changed=True, path=path, diff=dict(before=describe(recorded) or {"path": present[0]}, after={}))
    if module.check_mode:
        module.exit_json(msg="would remove " + ", ".join(present + ["the snapshot state"]), **result)
    try:
        for name in present:
            os.unlink(name)
        store.drop(SECTION)
    except OSError as exc:
        module.fail_json(msg="cannot remove the process snapshot: %s" % exc, path=path)
    module.exit_json(msg="removed " + ", ".join(present + ["the snapshot state"]), **result)


def run_module(module):
    if os.geteuid() != 0:
        module.fail_json(msg="sigsleuth_snapshot must run as root (it reads every process and writes %s); "
                             "connect as root or set become: true" % module.params["state_dir"])
    store = StateStore(module.params["state_dir"], boot_id_path=PATHS["boot_id"])
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg="%s; move it aside to start afresh" % exc)
    path = os.path.join(module.params["state_dir"], SNAPSHOT_FILE)
    if module.params["state"] == "present":
        section = store.section(SECTION, data)
        take(module, store, path, section)
    else:
        remove(module, store, data, path)


def main():
    run_module(build_module())


if __name__ == "__main__":
    main()
