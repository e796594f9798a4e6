#!/usr/bin/python
# -*- coding: utf-8 -*-
# sigsleuth: arm and disarm the dedicated tracefs instance that records signals and process lineage.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_trace
short_description: Arm or disarm the sigsleuth tracefs instance that records who sends a signal
description:
  - Manages one dedicated tracefs instance (C(<tracefs>/instances/<instance>)) that records
    C(signal:signal_generate) for the requested signals and the process lineage events
    C(sched:sched_process_fork), C(sched:sched_process_exec), C(sched:sched_process_exit),
    C(task:task_newtask) and C(task:task_rename).
  - Also enables, when the kernel has them, the entry tracepoints of the kill-family system calls
    (C(syscalls:sys_enter_kill), C(tkill), C(tgkill), C(pidfd_send_signal), C(rt_sigqueueinfo),
    C(rt_tgsigqueueinfo)) filtered on the signal, and C(oom:mark_victim). Missing optional events do not stop
    arming; they are returned in RV(missing_optional_events).
  - The instance uses the C(boot) trace clock, records thread group ids and overwrites the oldest events when
    full (never the newest, which would drop the kill itself).
  - Mounts tracefs when it is not mounted, and unmounts it at O(state=absent) only when this module mounted it
    during the same boot.
  - Never touches the top-level trace buffer or any other instance. An instance of the requested name that
    sigsleuth did not create on this boot is left alone and the module fails.
  - What was changed is recorded in the C(ftrace) section of C(<state_dir>/state.json), which
    O(state=absent) and the C(sigsleuth_facts) module read.
version_added: "0.1.0"
author:
  - sigsleuth developers
options:
  state:
    description:
      - V(present) arms the instance (creating it, or updating its settings); V(absent) removes exactly what
        the state file records and nothing else.
    type: str
    choices: [present, absent]
    default: present
  instance:
    description:
      - Name of the trace instance below C(<tracefs>/instances/).
      - Ignored by O(state=absent), which removes the instance recorded in the state file.
    type: str
    default: sigsleuth
  signals:
    description:
      - Signals to record, by name (V(KILL), V(SIGKILL), case-insensitive) or number (1-64).
    type: list
    elements: str
    default: [KILL]
  buffer_size_kb:
    description:
      - Ring buffer size per CPU in KiB. The kernel rounds it up to whole pages.
      - At about 3 events per fork+exec, 8192 KiB holds about two minutes of history at 1000 fork+exec per
        second. Older events are overwritten first and counted as overrun.
    type: int
    default: 8192
  state_dir:
    description:
      - Directory of the sigsleuth state file (created 0700 when missing, removed at disarm when sigsleuth
        created it and nothing else is left in it).
    type: path
    default: /var/lib/sigsleuth
  tracefs_path:
    description:
      - Where tracefs is (or is to be mounted). By default the mounted tracefs is found in C(/proc/mounts),
        preferring C(/sys/kernel/tracing), and mounted there when there is none.
    type: path
requirements:
  - Linux with tracefs (CONFIG_FTRACE, CONFIG_EVENT_TRACING).
  - "Root on the target (C(become: true) when connecting as another user)."
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Re-arming with the same settings changes nothing and keeps the recorded arm time. Changing the signals
    updates the filters in place without clearing the buffer.
  - After a reboot the state file is stale; O(state=present) arms afresh and O(state=absent) only removes the
    stale files.
seealso:
  - module: sigsleuth_snapshot
"""

EXAMPLES = r"""
- name: Record SIGKILL and SIGTERM senders
  sigsleuth_trace:
    signals: [KILL, TERM]

- name: A bigger buffer for a busy host
  sigsleuth_trace:
    signals: [KILL]
    buffer_size_kb: 32768

- name: Disarm
  sigsleuth_trace:
    state: absent
"""

RETURN = r"""
instance:
  description: Name of the trace instance.
  returned: always
  type: str
  sample: sigsleuth
instance_path:
  description: Directory of the trace instance.
  returned: when armed, or when disarm found a recorded instance
  type: str
  sample: /sys/kernel/tracing/instances/sigsleuth
tracefs:
  description: The tracefs root used.
  returned: when tracefs was found or mounted
  type: str
  sample: /sys/kernel/tracing
mounted_by_us:
  description: Whether sigsleuth mounted tracefs (and so unmounts it at disarm).
  returned: when state=present
  type: bool
signals:
  description: The armed signal numbers, sorted.
  returned: when state=present
  type: list
  elements: int
  sample: [9, 15]
signal_names:
  description: The armed signals by name.
  returned: when state=present
  type: list
  elements: str
  sample: [SIGKILL, SIGTERM]
armed_at_ns:
  description:
    - Wall clock (CLOCK_REALTIME, ns) of the last change to the instance; unchanged by an idempotent run.
    - None in check mode when something would change.
  returned: when state=present
  type: int
armed_at:
  description: RV(armed_at_ns) as ISO 8601 UTC.
  returned: when state=present
  type: str
  sample: "2026-11-26T07:01:02.123456Z"
missing_optional_events:
  description: Optional events this kernel lacks; armed without them.
  returned: when state=present
  type: list
  elements: str
  sample: [oom/mark_victim]
settings:
  description: The instance settings after the run (in check mode, what they would be).
  returned: when state=present
  type: dict
msg:
  description: What was done, or would be done in check mode.
  returned: always
  type: str
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_clock import clock_offset_ns, iso_utc
from ansible.module_utils.sigsleuth_command import ModuleRunner, SigsleuthError, fail_from
from ansible.module_utils.sigsleuth_state import StateStore
from ansible.module_utils.sigsleuth_vocabulary import (
    BOOT_ID_PATH, DEFAULT_TRACEFS, MOUNTS, STATE_DIR, parse_signals, signal_name,
)
from ansible.module_utils.sigsleuth_tracefs import (
    DEFAULT_BUFFER_SIZE_KB, DEFAULT_INSTANCE, TRACE_CLOCK,
    create_instance, desired_settings, find_tracefs, instance_names, instance_path, is_tracefs_root,
    mount_tracefs, normalise, observed_settings, probe_events, remove_instance, tracefs_mounts,
    unmount_tracefs, apply,
)

SECTION = "ftrace"

# Module-level so unit tests can point them at a fake tree.
PATHS = {"boot_id": BOOT_ID_PATH, "mounts": MOUNTS, "default_tracefs": DEFAULT_TRACEFS}


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            instance=dict(type="str", default=DEFAULT_INSTANCE),
            signals=dict(type="list", elements="str", default=["KILL"]),
            buffer_size_kb=dict(type="int", default=DEFAULT_BUFFER_SIZE_KB),
            state_dir=dict(type="path", default=STATE_DIR),
            tracefs_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )


def locate_tracefs(requested):
    """(tracefs root, needs mounting)."""
    if requested:
        if is_tracefs_root(requested):
            return requested, False
        return requested, True
    found = find_tracefs(PATHS["mounts"])
    if found:
        return found, False
    return PATHS["default_tracefs"], True


def arm(module, store, section):
    params = module.params
    try:
        signals = parse_signals(params["signals"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    if params["buffer_size_kb"] < 1:
        module.fail_json(msg="buffer_size_kb must be at least 1 (KiB per CPU), got %d" % params["buffer_size_kb"])
    try:
        instance_path(DEFAULT_TRACEFS, params["instance"])
    except SigsleuthError as exc:
        fail_from(module, exc)

    tracefs, needs_mount = locate_tracefs(params["tracefs_path"])
    if section and (section.get("instance") != params["instance"] or section.get("tracefs") != tracefs):
        module.fail_json(
            msg="sigsleuth is already armed on this host with instance %r at %s; disarm it first (state=absent) "
                "before arming instance %r at %s"
                % (section.get("instance"), section.get("tracefs"), params["instance"], tracefs))
    mounted_by_us = needs_mount or bool(section and section.get("mounted_by_us"))
    undo = Undo(module, store, section)

    if needs_mount and module.check_mode:
        # Nothing to probe before the mount: assume a complete kernel and say so.
        signal_fields, missing_optional = None, []
    else:
        if needs_mount:
            try:
                mount_tracefs(tracefs, run=ModuleRunner(module))
            except SigsleuthError as exc:
                fail_from(module, exc)
            undo.mounted = tracefs
        signal_fields, missing_required, missing_optional = probe_events(tracefs)
        if missing_required:
            undo.fail(
                msg="this kernel lacks the trace event%s %s needed by sigsleuth (looked in %s/events)"
                    % ("s" if len(missing_required) > 1 else "",
                       ", ".join(event.replace("/", ":") for event in missing_required), tracefs),
                missing_events=missing_required)

    path = instance_path(tracefs, params["instance"])
    exists = os.path.isdir(path)
    if exists and not section:
        undo.fail(
            msg="trace instance %s exists but sigsleuth did not create it on this boot (it is not recorded in "
                "%s): it belongs to someone else and is left alone; choose another name with instance=..."
                % (path, store.path), instance_path=path)

    desired = desired_settings(signals, params["buffer_size_kb"], signal_fields, missing_optional)
    before = observed_settings(path) if exists else None
    after = normalise(desired, before)
    record = {
        "instance": params["instance"],
        "tracefs": tracefs,
        "mounted_by_us": mounted_by_us,
        "signals": signals,
        "clock": TRACE_CLOCK,
        "buffer_size_kb": params["buffer_size_kb"],
        "missing_optional_events": missing_optional,
    }
    recorded = bool(section) and section.get("armed_at_ns") is not None and all(
        section.get(key) == value for key, value in record.items())
    changed = needs_mount or before != after or not recorded

    result = dict(
        changed=changed,
        instance=params["instance"],
        instance_path=path,
        tracefs=tracefs,
        mounted_by_us=mounted_by_us,
        signals=signals,
        signal_names=[signal_name(number) for number in signals],
        missing_optional_events=missing_optional,
        settings=after,
        diff=dict(before=before or {}, after=after),
    )
    if not changed:
        result.update(armed_at_ns=section["armed_at_ns"], armed_at=iso_utc(section["armed_at_ns"]),
                      msg="already armed: %s" % path)
        module.exit_json(**result)
    if module.check_mode:
        actions = (["mount tracefs at %s" % tracefs] if needs_mount else []) + [
            "update %s" % path if exists else "create %s" % path]
        result.update(armed_at_ns=None, armed_at=None, msg="would " + " and ".join(actions))
        module.exit_json(**result)

    try:
        if not exists:
            # Record ownership before creating, so an interrupted arm is still ours to finish or disarm.
            store.put(SECTION, dict(record, armed_at_ns=None, clock_offset_ns=None))
            undo.state_written = True
            create_instance(path)
            undo.created = path
        apply(path, desired, observed_settings(path))
        armed_at_ns = time.time_ns()
        store.put(SECTION, dict(record, armed_at_ns=armed_at_ns, clock_offset_ns=clock_offset_ns()))
    except SigsleuthError as exc:
        undo.fail(msg=exc.msg, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr, instance_path=path)
    except OSError as exc:
        undo.fail(msg="cannot arm %s: %s" % (path, exc), instance_path=path)

    result.update(armed_at_ns=armed_at_ns, armed_at=iso_utc(armed_at_ns),
                  settings=normalise(desired, observed_settings(path)),
                  msg="armed %s for %s" % (path, ", ".join(result["signal_names"])))
    result["diff"]["after"] = result["settings"]
    module.exit_json(**result)


class Undo:
    """What a failing arm must take back so the host is left as it was found."""

    def __init__(self, module, store, previous_section):
        self.module = module
        self.store = store
        self.previous_section = previous_section
        self.mounted = None
        self.created = None
        self.state_written = False

    def fail(self, **kwargs):
        if self.created:
            try:
                remove_instance(self.created)
            except SigsleuthError as exc:
                self.module.warn("could not remove the half-armed instance %s: %s" % (self.created, exc.msg))
        if self.mounted:
            unmount_quietly(self.module, self.mounted)
        if self.state_written:
            try:
                if self.previous_section:
                    self.store.put(SECTION, self.previous_section)
                else:
                    self.store.drop(SECTION)
            except (OSError, ValueError) as exc:
                self.module.warn("could not restore %s: %s" % (self.store.path, exc))
        self.module.fail_json(**kwargs)


def unmount_quietly(module, tracefs):
    try:
        unmount_tracefs(tracefs, run=ModuleRunner(module))
    except SigsleuthError as exc:
        module.warn("%s; it stays mounted" % exc.msg)


def disarm(module, store, data, section):
    if not data or SECTION not in data:
        module.exit_json(changed=False, instance=module.params["instance"], msg="not armed: nothing to remove")
    if section is None:
        # Recorded under an earlier boot: the instance and any mount died with the reboot. Whatever has our
        # name now is someone else's.
        if not module.check_mode:
            store.drop(SECTION)
        module.exit_json(changed=True, instance=data[SECTION].get("instance", module.params["instance"]),
                         msg="removed the state of an arm from an earlier boot; nothing else touched",
                         diff=dict(before={"state": data[SECTION]}, after={}))

    tracefs = section.get("tracefs")
    try:
        if not isinstance(tracefs, str) or not tracefs:
            raise SigsleuthError("the ftrace section of %s names no tracefs" % store.path)
        path = instance_path(tracefs, section.get("instance"))
    except SigsleuthError as exc:
        module.fail_json(msg="%s; it is corrupt: check the instance by hand, then remove the file" % exc.msg)
    # tracefs unmounted since arm (by someone else): the instance lives on in the kernel, out of sight. Mount
    # it again for the time it takes to remove the instance.
    remount = not is_tracefs_root(tracefs)
    before = None if remount else observed_settings(path)
    unmount = not remount and bool(section.get("mounted_by_us")) and tracefs in tracefs_mounts(PATHS["mounts"])
    actions = []
    if remount:
        actions.append("mount tracefs at %s to remove %s, then unmount it" % (tracefs, path))
    elif before is not None:
        actions.append("remove %s" % path)
    if unmount:
        actions.append("unmount tracefs at %s" % tracefs)
    actions.append("drop the ftrace state")
    result = dict(changed=True, instance=section["instance"], instance_path=path, tracefs=tracefs,
                  diff=dict(before=before or {}, after={}))
    if module.check_mode:
        module.exit_json(msg="would " + ", ".join(actions), **result)

    try:
        if remount:
            mount_tracefs(tracefs, run=ModuleRunner(module))
            try:
                remove_instance(path)
            finally:
                unmount_quietly(module, tracefs)
        else:
            remove_instance(path)
    except SigsleuthError as exc:
        fail_from(module, exc, instance_path=path)
    if unmount:
        others = instance_names(tracefs)
        if others:
            module.warn("tracefs at %s was mounted by sigsleuth but now holds other instances (%s): left mounted"
                        % (tracefs, ", ".join(others)))
            actions.remove("unmount tracefs at %s" % tracefs)
        else:
            try:
                unmount_tracefs(tracefs, run=ModuleRunner(module))
            except SigsleuthError as exc:
                module.warn("%s; it stays mounted" % exc.msg)
                actions.remove("unmount tracefs at %s" % tracefs)
    store.drop(SECTION)
    module.exit_json(msg="disarmed: " + ", ".join(actions), **result)


def run_module(module):
    if os.geteuid() != 0:
        module.fail_json(msg="sigsleuth_trace must run as root (tracefs and %s are root-only); connect as root "
                             "or set become: true" % module.params["state_dir"])
    store = StateStore(module.params["state_dir"], boot_id_path=PATHS["boot_id"])
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg="%s; move it aside to start afresh" % exc)
    section = store.section(SECTION, data)
    if module.params["state"] == "present":
        arm(module, store, section)
    else:
        disarm(module, store, data, section)


def main():
    run_module(build_module())


if __name__ == "__main__":
    main()
