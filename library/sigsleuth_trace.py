#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
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
  - Also enables, when the kernel has them, C(oom:mark_victim) and C(cgroup:cgroup_attach_task). With
    O(precision=light) (the default) nothing else is recorded, so the cost follows process lifecycle and the
    armed signals, never ordinary syscalls. Missing optional events do not stop arming; they are returned in
    RV(missing_optional_events).
  - O(precision=syscall) also enables the kill-family system calls' entries (C(syscalls:sys_enter_kill),
    C(tkill), C(tgkill), C(pidfd_send_signal), C(rt_sigqueueinfo), C(rt_tgsigqueueinfo)) filtered on the
    signal, and their exits; C(prlimit64) and C(setrlimit) filtered on the CPU-time limits; and, where the
    kernel filters on user-space strings (Linux 5.17 and later), opens of a C(cgroup.kill) file
    (C(filename.ustring ~ "*/cgroup.kill")). Each records only those rare calls, but any enabled syscall event
    puts every syscall of every task through the tracing slow path. A kernel without these events is armed
    light, with a warning saying what that leaves undistinguished.
  - The instance uses the C(boot) trace clock, records thread group ids and overwrites the oldest events when
    full (never the newest, which would drop the kill itself).
  - Mounts tracefs when it is not mounted, and unmounts it at O(state=absent) only when this module mounted it
    during the same boot.
  - Never touches the top-level trace buffer or any other instance. An instance of the requested name that
    sigsleuth did not create on this boot is left alone and the module fails.
  - What was changed is recorded in the C(ftrace) section of C(<state_dir>/state.json), which
    O(state=absent) and M(sigsleuth.sigsleuth.sigsleuth_facts) read.
version_added: "1.0.0"
author:
  - sigsleuth developers (@sigsleuth)
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
      - Where the C(ftrace) section of C(state.json) records the instance, the tracefs mount and the arm time.
        Created 0700; removed at disarm when sigsleuth created it and no other section is left.
    type: path
    default: /var/lib/sigsleuth
  tracefs_path:
    description:
      - Where tracefs is (or is to be mounted). By default the mounted tracefs is found in C(/proc/mounts),
        preferring C(/sys/kernel/tracing), and mounted there when there is none.
    type: path
  precision:
    description:
      - "V(light) records only events whose rate follows process lifecycle and the armed signals; a send's
        mechanism is then named exactly where the signal itself tells (OOM, parent death, CPU-time limits known
        at arm time, kernel sends) and otherwise as the honest family its siginfo code gives: V(user_signal)
        (kill, pidfd_send_signal or cgroup.kill), V(thread_signal) (tkill or tgkill), V(queued_signal) (the
        sigqueue family)."
      - V(syscall) adds the syscall events that name the exact syscall and recognise cgroup.kill and CPU-time
        limits set after arming. Changing it on an armed host updates the instance in place.
    type: str
    choices: [light, syscall]
    default: light
requirements:
  - Linux with tracefs (CONFIG_FTRACE, CONFIG_EVENT_TRACING).
  - "Root on the target (C(become: true) when connecting as another user)."
attributes:
  check_mode:
    support: full
    description:
      - Can run in check_mode and return changed status prediction without modifying target.
      - Where tracefs is not mounted, check mode does not mount it and predicts for a kernel with every event.
  diff_mode:
    support: full
    description: Returns the instance settings (trace clock, buffer size, options, events and their filters) before
      and after.
  platform:
    platforms: linux
    support: full
    description: Linux with tracefs only.
notes:
  - Re-arming with the same settings changes nothing and keeps the recorded arm time. Changing the signals
    updates the filters in place without clearing the buffer.
  - After a reboot the state file is stale; O(state=present) arms afresh and O(state=absent) only removes the
    stale files.
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_audit
  - module: sigsleuth.sigsleuth.sigsleuth_snapshot
  - module: sigsleuth.sigsleuth.sigsleuth_facts
  - module: sigsleuth.sigsleuth.sigsleuth_watch
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
  description: Name of the trace instance (at O(state=absent), the one the state file records).
  returned: always
  type: str
  sample: sigsleuth
instance_path:
  description:
    - Directory of the trace instance.
    - Also on failure when an instance of that name exists that sigsleuth did not create.
  returned: when state=present, or when disarm found an arm of this boot
  type: str
  sample: /sys/kernel/tracing/instances/sigsleuth
tracefs:
  description: The tracefs root used (found, to be mounted, or recorded at arm).
  returned: when state=present, or when disarm found an arm of this boot
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
precision:
  description: The precision armed (V(light) where V(syscall) was asked for but the kernel lacks its events).
  returned: when state=present
  type: str
  sample: light
cgroup_kill_opens:
  description: Whether opens of a cgroup.kill file are recorded (syscall precision, user-string filters).
  returned: when state=present
  type: bool
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
reason:
  description:
    - On failure, a machine-readable cause the caller can react to - V(tracefs_unusable) (tracefs is not
      mounted and cannot be, or the kernel lacks a required event; the role can fall back to audit alone then),
      V(not_root).
  returned: on failure, when the cause is one of these
  type: str
  sample: tracefs_unusable
missing_events:
  description: On failure with RV(reason=tracefs_unusable), the required events this kernel lacks.
  returned: on failure, when a required event is missing
  type: list
  elements: str
  sample: [task/task_rename]
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_clock import clock_offset_ns, iso_utc
from ansible.module_utils.sigsleuth_command import (
    REASON_NOT_ROOT, REASON_TRACEFS_UNUSABLE, ModuleRunner, SigsleuthError, fail_from,
)
from ansible.module_utils.sigsleuth_state import SECTION_FTRACE, StateStore
from ansible.module_utils.sigsleuth_tracefs import (
    DEFAULT_BUFFER_SIZE_KB, DEFAULT_INSTANCE, PRECISION_LIGHT, PRECISION_SYSCALL, PRECISIONS, TRACE_CLOCK, apply,
    create_instance, desired_settings, find_tracefs, instance_names, instance_path, is_tracefs_root,
    missing_for_precision, mount_tracefs, normalise, observed_settings, probe_events, remove_instance,
    tracefs_mounts, unmount_tracefs, user_string_filters,
)
from ansible.module_utils.sigsleuth_transaction import Transaction
from ansible.module_utils.sigsleuth_vocabulary import (
    BOOT_ID_PATH, DEFAULT_TRACEFS, MOUNTS, STATE_DIR, parse_signals, signal_name,
)

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
            precision=dict(type="str", default=PRECISION_LIGHT, choices=list(PRECISIONS)),
        ),
        supports_check_mode=True,
    )


def locate_tracefs(requested):
    """(tracefs root, needs mounting)."""
    if requested:
        return requested, not is_tracefs_root(requested)
    found = find_tracefs(PATHS["mounts"])
    if found:
        return found, False
    return PATHS["default_tracefs"], True


def arm_arguments(module):
    """The armed signal numbers, once every argument has been checked."""
    params = module.params
    try:
        signals = parse_signals(params["signals"])
        instance_path(DEFAULT_TRACEFS, params["instance"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    except SigsleuthError as exc:
        fail_from(module, exc)
    if params["buffer_size_kb"] < 1:
        module.fail_json(msg="buffer_size_kb must be at least 1 (KiB per CPU), got %d" % params["buffer_size_kb"])
    return signals


def probe(module, txn, tracefs, needs_mount):
    """(signal fields, missing optional events) of this kernel; mounts tracefs first when it must be read."""
    if needs_mount and module.check_mode:
        # Nothing to probe before the mount: assume a complete kernel and say so.
        txn.add("mount tracefs at %s" % tracefs, None)
        return None, []
    if needs_mount:
        try:
            mount_tracefs(tracefs, run=ModuleRunner(module))
        except SigsleuthError as exc:
            fail_from(module, exc)
        txn.applied("mount tracefs at %s" % tracefs, lambda: unmount_tracefs(tracefs, run=ModuleRunner(module)))
    signal_fields, missing_required, missing_optional = probe_events(tracefs)
    if missing_required:
        txn.fail(msg="this kernel lacks the trace event%s %s needed by sigsleuth (looked in %s/events)"
                     % ("s" if len(missing_required) > 1 else "",
                        ", ".join(event.replace("/", ":") for event in missing_required), tracefs),
                 missing_events=missing_required, reason=REASON_TRACEFS_UNUSABLE)
    return signal_fields, missing_optional


def settle_precision(module, missing_optional):
    """(precision, record cgroup.kill opens): syscall precision falls back to light where events are missing."""
    if module.params["precision"] != PRECISION_SYSCALL:
        return PRECISION_LIGHT, False
    lacking = missing_for_precision(missing_optional)
    if lacking:
        module.warn("this kernel lacks %s: armed with light precision instead of syscall precision, so kill(2), "
                    "pidfd_send_signal and cgroup.kill are not told apart, nor tkill from tgkill, and CPU-time "
                    "limits set after arming are not seen" % ", ".join(e.replace("/", ":") for e in lacking))
        return PRECISION_LIGHT, False
    return PRECISION_SYSCALL, user_string_filters() and not any(
        event.startswith("syscalls/sys_enter_open") for event in missing_optional)


def arm(module, store, section):
    params = module.params
    signals = arm_arguments(module)
    tracefs, needs_mount = locate_tracefs(params["tracefs_path"])
    if section and (section.get("instance") != params["instance"] or section.get("tracefs") != tracefs):
        module.fail_json(
            msg="sigsleuth is already armed on this host with instance %r at %s; disarm it first (state=absent) "
                "before arming instance %r at %s"
                % (section.get("instance"), section.get("tracefs"), params["instance"], tracefs))
    txn = Transaction(module)
    signal_fields, missing_optional = probe(module, txn, tracefs, needs_mount)
    path = instance_path(tracefs, params["instance"])
    exists = os.path.isdir(path)
    if exists and not section:
        txn.fail(msg="trace instance %s exists but sigsleuth did not create it on this boot (it is not recorded in "
                     "%s): it belongs to someone else and is left alone; choose another name with instance=..."
                     % (path, store.path), instance_path=path)
    precision, opens = settle_precision(module, missing_optional)
    desired = desired_settings(signals, params["buffer_size_kb"], signal_fields, missing_optional, precision, opens)
    before = observed_settings(path) if exists else None
    record = dict(instance=params["instance"], tracefs=tracefs,
                  mounted_by_us=needs_mount or bool(section and section.get("mounted_by_us")), signals=signals,
                  clock=TRACE_CLOCK, buffer_size_kb=params["buffer_size_kb"], missing_optional_events=missing_optional,
                  precision=precision, cgroup_kill_opens=opens)
    txn.result.update(instance=params["instance"], instance_path=path, tracefs=tracefs,
                      mounted_by_us=record["mounted_by_us"], signals=signals,
                      signal_names=[signal_name(number) for number in signals], missing_optional_events=missing_optional,
                      precision=precision, cgroup_kill_opens=opens,
                      settings=normalise(desired, before), diff=dict(before=before or {}, after=normalise(desired, before)),
                      armed_at_ns=(section or {}).get("armed_at_ns"), armed_at=iso_utc((section or {}).get("armed_at_ns")))
    recorded = bool(section) and section.get("armed_at_ns") is not None and all(
        section.get(key) == value for key, value in record.items())
    if before == txn.result["settings"] and recorded and not txn.changed:
        txn.exit_unchanged("already armed: %s" % path)
    plan_arm(txn, store, section, record, path, desired, exists)
    txn.run(lambda _: "armed %s for %s" % (path, ", ".join(txn.result["signal_names"])), instance_path=path)


def plan_arm(txn, store, section, record, path, desired, exists):
    """The steps from the observed instance to the desired one, and the state record around them."""
    txn.result.update(armed_at_ns=None, armed_at=None)
    if not exists:
        # Record ownership before creating, so an interrupted arm is still ours to finish or disarm.
        txn.add("record the instance as sigsleuth's", lambda: store.put(SECTION_FTRACE, dict(
            record, armed_at_ns=None, clock_offset_ns=None)), lambda: restore_section(store, section), quiet=True)
        txn.add("create %s" % path, lambda: create_instance(path), lambda: remove_instance(path))
    txn.add("update %s" % path if exists else "configure %s" % path,
            lambda: apply(path, desired, observed_settings(path)), quiet=not exists)

    def record_arm():
        armed_at_ns = time.time_ns()
        store.put(SECTION_FTRACE, dict(record, armed_at_ns=armed_at_ns, clock_offset_ns=clock_offset_ns()))
        settings = normalise(desired, observed_settings(path))
        txn.result.update(armed_at_ns=armed_at_ns, armed_at=iso_utc(armed_at_ns), settings=settings)
        txn.result["diff"]["after"] = settings
    txn.add("record the arm time", record_arm, quiet=True)


def restore_section(store, previous):
    if previous:
        store.put(SECTION_FTRACE, previous)
    else:
        store.drop(SECTION_FTRACE)


def disarm(module, store, data, section):
    if not data or SECTION_FTRACE not in data:
        module.exit_json(changed=False, instance=module.params["instance"], msg="not armed: nothing to remove")
    txn = Transaction(module, instance=data[SECTION_FTRACE].get("instance", module.params["instance"]))
    if section is None:
        # Recorded under an earlier boot: the instance and any mount died with the reboot. Whatever has our
        # name now is someone else's.
        txn.result["diff"] = dict(before={"state": data[SECTION_FTRACE]}, after={})
        txn.add("drop the state of an arm from an earlier boot", lambda: store.drop(SECTION_FTRACE))
        txn.run("removed the state of an arm from an earlier boot; nothing else touched",
                "would remove the state of an arm from an earlier boot; nothing else touched")
    tracefs = section.get("tracefs")
    try:
        if not isinstance(tracefs, str) or not tracefs:
            raise SigsleuthError("the ftrace section of %s names no tracefs" % store.path)
        path = instance_path(tracefs, section.get("instance"))
    except SigsleuthError as exc:
        module.fail_json(msg="%s; it is corrupt: check the instance by hand, then remove the file" % exc.msg)
    plan_disarm(module, txn, store, section, tracefs, path)
    txn.run(lambda _: "disarmed: " + ", ".join(txn.descriptions()), instance_path=path)


def plan_disarm(module, txn, store, section, tracefs, path):
    run = ModuleRunner(module)
    # tracefs unmounted since arm (by someone else): the instance lives on in the kernel, out of sight. Mount
    # it again for the time it takes to remove the instance.
    remount = not is_tracefs_root(tracefs)
    before = None if remount else observed_settings(path)
    txn.result.update(instance=section["instance"], instance_path=path, tracefs=tracefs,
                      diff=dict(before=before or {}, after={}))
    if remount:
        def remove_remounted():
            mount_tracefs(tracefs, run=run)
            try:
                remove_instance(path)
            finally:
                unmount_quietly(module, tracefs)
        txn.add("mount tracefs at %s to remove %s, then unmount it" % (tracefs, path), remove_remounted)
    elif before is not None:
        txn.add("remove %s" % path, lambda: remove_instance(path))
    if not remount and section.get("mounted_by_us") and tracefs in tracefs_mounts(PATHS["mounts"]):
        txn.add("unmount tracefs at %s" % tracefs, lambda: unmount_if_empty(module, tracefs))
    txn.add("drop the ftrace state", lambda: store.drop(SECTION_FTRACE))


def unmount_if_empty(module, tracefs):
    """False (nothing done) when tracefs holds other instances now, or cannot be unmounted."""
    others = instance_names(tracefs)
    if others:
        module.warn("tracefs at %s was mounted by sigsleuth but now holds other instances (%s): left mounted"
                    % (tracefs, ", ".join(others)))
        return False
    return unmount_quietly(module, tracefs)


def unmount_quietly(module, tracefs):
    try:
        unmount_tracefs(tracefs, run=ModuleRunner(module))
        return True
    except SigsleuthError as exc:
        module.warn("%s; it stays mounted" % exc.msg)
        return False


def main():
    module = build_module()
    if os.geteuid() != 0:
        module.fail_json(msg="sigsleuth_trace must run as root (tracefs and %s are root-only); connect as root "
                             "or set become: true" % module.params["state_dir"], reason=REASON_NOT_ROOT)
    store = StateStore(module.params["state_dir"], boot_id_path=PATHS["boot_id"])
    try:
        data = store.load()
    except ValueError as exc:
        module.fail_json(msg="%s; move it aside to start afresh" % exc)
    if module.params["state"] == "present":
        arm(module, store, store.section(SECTION_FTRACE, data))
    disarm(module, store, data, store.section(SECTION_FTRACE, data))


if __name__ == "__main__":
    main()
