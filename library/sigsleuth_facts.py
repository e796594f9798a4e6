#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: who sent the armed signals, and where the senders came from, as a report and as facts.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_facts
short_description: Reconstruct who sent the armed signals, and the sender's ancestry
description:
  - Streams the sigsleuth trace instance armed by M(sigsleuth.sigsleuth.sigsleuth_trace) line by line, replays
    it through the lineage engine seeded with the arm-time process snapshot, and returns one record per
    delivery of an armed signal with its sender, the sender's ancestry (parent first) and the gaps in what is
    known.
  - Reads only; it changes nothing on the host.
  - The report follows C(schema/report.schema.json) in the sigsleuth repository.
version_added: "1.0.0"
options:
  state_dir:
    description: Where arm recorded its state and snapshot.
    type: path
    default: /var/lib/sigsleuth
  host:
    description: The name the report gives the host; the target's hostname when omitted.
    type: str
  trace_file:
    description:
      - Read this saved copy of a trace instead of the live instance (replays, tests).
      - Loss counters of the live instance are not read then.
    type: path
attributes:
  check_mode:
    support: full
    description: Reads only, so it runs the same in check mode (and never reports a change).
  diff_mode:
    support: none
    description: Changes nothing, so there is no difference to show.
  facts:
    support: full
    description: Sets C(ansible_facts.sigsleuth) to the report.
  platform:
    platforms: linux
    support: full
    description: Linux only.
notes:
  - Needs root to read tracefs.
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_trace
  - module: sigsleuth.sigsleuth.sigsleuth_audit
  - module: sigsleuth.sigsleuth.sigsleuth_snapshot
author:
  - sigsleuth developers (@sigsleuth)
"""

EXAMPLES = r"""
- name: Collect the kills seen since arming
  sigsleuth_facts:
  register: __sigsleuth_collected

- name: Show who killed what
  ansible.builtin.debug:
    var: ansible_facts.sigsleuth.kills
"""

RETURN = r"""
report:
  description: The report (schema/report.schema.json), also set as C(ansible_facts.sigsleuth).
  returned: always
  type: dict
  sample:
    schema_version: "1.0.0"
    host: web1
    kills:
      - time: "2026-11-26T07:01:02.123456Z"
        signal: {number: 9, name: SIGKILL}
        sender: {pid: 4242, tid: 4242, comm: kill, exe: /usr/bin/kill, exited: true}
        ancestry: [{pid: 4240, comm: sh, exe: /usr/bin/sh, exited: true}]
        gaps: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_collect import collect


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", default="/var/lib/sigsleuth"),
            host=dict(type="str"),
            trace_file=dict(type="path"),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    try:
        report = collect(module.params["state_dir"], host=module.params["host"],
                         trace_file=module.params["trace_file"])
    except (OSError, ValueError) as exc:
        module.fail_json(msg="sigsleuth collection failed: %s" % exc)
    module.exit_json(changed=False, report=report, ansible_facts={"sigsleuth": report})


if __name__ == "__main__":
    main()
