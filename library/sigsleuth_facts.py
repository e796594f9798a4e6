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
  - Reads what was armed on this host, as recorded in C(<state_dir>/state.json) - the trace instance of
    M(sigsleuth.sigsleuth.sigsleuth_trace), the audit log (and its rotations) of
    M(sigsleuth.sigsleuth.sigsleuth_audit) - streaming it line by line into the lineage engine seeded with the
    arm-time process snapshot of M(sigsleuth.sigsleuth.sigsleuth_snapshot).
  - Returns one record per delivery of an armed signal with its sender, the sender's ancestry (parent first)
    and the gaps in what is known. Audit adds to the traced kills; where no trace was read, audit alone builds
    the lineage.
  - A host that is not armed, or rebooted since arming, gets a report that says so in RV(report.sources)
    rather than a failure.
  - With a watch drain (M(sigsleuth.sigsleuth.sigsleuth_watch)) it reads the drain's persisted lineage and kills
    instead of the whole buffer - after asking a running drain to consume what the buffer holds and flush -
    plus, when the drain no longer runs, the buffer's unconsumed rest; RV(report.sources) then has
    C(ftrace.watch).
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
  redact:
    description:
      - Regular expressions (Python C(re)) marking secrets in each process's C(argv) (and C(proctitle)) and
        C(cwd), replaced with C(<redacted>) on the host, before the report leaves it.
      - An argv is searched as one line, its elements joined by single spaces, so that C(--password secret)
        in two elements reads as in a shell; a cwd as it is. The part replaced is the named group C(secret),
        else group 1, else the whole match; the rest stays visible (C(--password=<redacted>)).
      - When omitted, the default set of C(module_utils/sigsleuth_redact.py) (C(DEFAULT_PATTERNS)), the same
        as the role's C(sigsleuth_redact) default - C(--password=...), C(--token ...), C(-p...) after
        mysql-like commands, C(token=...), C(AWS_SECRET_...=...), C(Authorization:) headers, URL passwords
        and more.
      - An empty list turns redaction off. A pattern that does not compile fails the module before anything
        is read.
    type: list
    elements: str
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
  - Needs root to read tracefs and the audit log.
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_trace
  - module: sigsleuth.sigsleuth.sigsleuth_audit
  - module: sigsleuth.sigsleuth.sigsleuth_snapshot
  - module: sigsleuth.sigsleuth.sigsleuth_watch
author:
  - sigsleuth developers (@sigsleuth)
"""

EXAMPLES = r"""
- name: Collect the kills seen since arming
  sigsleuth_facts:
  register: collected

- name: Show who killed what
  ansible.builtin.debug:
    var: ansible_facts.sigsleuth.kills

- name: Collect, redacting only a site's own secret flag (the named group secret is replaced)
  sigsleuth_facts:
    redact:
      - '--vault-key[= ](?P<secret>[^ ]+)'

- name: Collect without redaction (argv and cwd as the processes had them)
  sigsleuth_facts:
    redact: []

- name: Replay a saved copy of the trace against this host's arm state
  sigsleuth_facts:
    trace_file: /tmp/sigsleuth-trace.txt
    host: web1
"""

RETURN = r"""
report:
  description: The report (C(schema/report.schema.json)), also set as C(ansible_facts.sigsleuth).
  returned: always
  type: dict
  contains:
    schema_version:
      description: Version of the report's shape; minor versions only add optional fields.
      returned: always
      type: str
      sample: "1.5.0"
    host:
      description: O(host), or the target's hostname.
      returned: always
      type: str
      sample: web1
    armed_at:
      description: When the first source was armed (ISO 8601 UTC); null when nothing was armed.
      returned: always
      type: str
      sample: "2026-11-26T06:55:00.000000Z"
    collected_at:
      description: When the report was made (ISO 8601 UTC).
      returned: always
      type: str
      sample: "2026-11-26T07:10:00.000000Z"
    signals:
      description: The armed signal numbers.
      returned: always
      type: list
      elements: int
      sample: [9]
    sources:
      description:
        - Per evidence source (C(ftrace), C(audit), C(snapshot)), whether it was armed or why not, what was read
          and what was lost; C(clock) says how trace and wall-clock times were matched.
      returned: always
      type: dict
      sample:
        snapshot: {armed: true, taken_at: "2026-11-26T06:55:00.100000Z", processes: 142}
        audit: {armed: false, reason: not armed}
    producer:
      description: What made the report - the collection and its version (since schema 1.3.0).
      returned: always
      type: dict
      contains:
        name:
          description: The collection.
          returned: always
          type: str
          sample: sigsleuth.sigsleuth
        version:
          description: The collection's version.
          returned: always
          type: str
          sample: "1.0.0"
    redaction:
      description: What redaction did before the report left the host (since schema 1.4.0).
      returned: always
      type: dict
      contains:
        applied:
          description: Whether any pattern was applied (false when O(redact) is empty).
          returned: always
          type: bool
          sample: true
        patterns:
          description: How many patterns were applied.
          returned: always
          type: int
          sample: 10
        redacted:
          description: How many values (an argv, a proctitle or a cwd) had a part replaced with C(<redacted>).
          returned: always
          type: int
          sample: 1
        fields:
          description: The report's fields redaction applies to, wherever they appear.
          returned: always
          type: list
          elements: str
          sample: [argv, cwd, proctitle]
    kills:
      description:
        - One record per delivery of an armed signal - C(time), C(signal), C(victim), C(sender) (null when no
          process sent it), C(origin), C(mechanism), C(ancestry) (parent first), C(gaps) and more (see the
          schema).
      returned: always
      type: list
      elements: dict
      sample:
        - time: "2026-11-26T07:01:02.123456Z"
          signal: {number: 9, name: SIGKILL}
          victim: {pid: 4100, tid: 4100, comm: agent, exe: /usr/local/bin/agent, exited: true, source: snapshot}
          sender: {pid: 4242, tid: 4242, comm: kill, exe: /usr/bin/kill, exited: true, source: ftrace}
          origin: user
          mechanism: kill
          ancestry: [{pid: 4240, comm: sh, exe: /usr/bin/dash, exited: true, source: ftrace}]
          gaps: []
ansible_facts:
  description: Facts added to the host's facts.
  returned: always
  type: dict
  contains:
    sigsleuth:
      description: The same report as RV(report).
      returned: always
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.sigsleuth_collect import collect
from ansible.module_utils.sigsleuth_redact import Redactor


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            state_dir=dict(type="path", default="/var/lib/sigsleuth"),
            host=dict(type="str"),
            trace_file=dict(type="path"),
            redact=dict(type="list", elements="str"),
        ),
        supports_check_mode=True,
    )


def main():
    module = build_module()
    patterns = module.params["redact"]
    try:
        redactor = Redactor() if patterns is None else Redactor(patterns)
    except ValueError as exc:
        module.fail_json(msg="sigsleuth collection refused: %s" % exc)
    try:
        report = collect(module.params["state_dir"], host=module.params["host"],
                         trace_file=module.params["trace_file"], redactor=redactor)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="sigsleuth collection failed: %s" % exc)
    module.exit_json(changed=False, report=report, ansible_facts={"sigsleuth": report})


if __name__ == "__main__":
    main()
