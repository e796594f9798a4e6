#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: (c) 2026, sigsleuth developers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# sigsleuth: the documentation of the control-node action that writes the reports and the fleet summaries.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: sigsleuth_report_files
short_description: Write each host's sigsleuth report and the fleet summaries on the control node
description:
  - Runs on the control node only (an action plugin); nothing is sent to the hosts.
  - Writes C(<dir>/<host directory>/report.json) for every host that has a report, then C(<dir>/summary.md) and
    C(<dir>/summary.html) (one self-contained page), in one step for the whole fleet. Directories are 0700,
    files 0600, each written atomically.
  - A host name is data. Its directory is its name with every byte outside C([A-Za-z0-9._-+,=@:]), and a
    leading C(.) or C(-), percent-encoded (C(../x) becomes C(%2E.%2Fx), C(a/b) becomes C(a%2Fb)), and no
    symlink below O(dir) is followed, so no host name can write outside O(dir).
  - A host whose report cannot be written is named in RV(write_errors) with the reason, and in the summaries;
    the other hosts are written all the same.
version_added: "1.0.0"
options:
  dir:
    description: The report directory (absolute); made (0700) when missing.
    type: path
    required: true
  outcomes:
    description:
      - Host name to outcome, where an outcome is C({report, error}) (either may be null), or empty when the
        host dropped out before collection.
    type: dict
    default: {}
  check_only:
    description: Only check that reports can be written to O(dir) (making it when missing); write nothing.
    type: bool
    default: false
  title:
    description: The summaries' title.
    type: str
    default: sigsleuth summary
attributes:
  check_mode:
    support: full
    description: Writes nothing and makes no directory; returns the paths it would write.
  diff_mode:
    support: none
    description: Reports are new files each time; no difference is shown.
  platform:
    platforms: posix
    support: full
    description: The control node.
seealso:
  - module: sigsleuth.sigsleuth.sigsleuth_facts
author:
  - sigsleuth developers (@sigsleuth)
"""

EXAMPLES = r"""
- name: Check once, before any host is read, that reports can be written
  sigsleuth_report_files:
    dir: /srv/sigsleuth/reports
    check_only: true
  run_once: true

- name: Write every host's report and the fleet summaries
  sigsleuth_report_files:
    dir: /srv/sigsleuth/reports
    outcomes: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars)
                   | map(attribute='outcome', default={}))) }}"
  run_once: true
  register: written
"""

RETURN = r"""
dir:
  description: The report directory, absolute.
  returned: always
  type: str
  sample: /srv/sigsleuth/reports
report_paths:
  description: Host name to the path of its report.json; null for a host without a report or not written.
  returned: unless O(check_only)
  type: dict
  sample: {"web1": "/srv/sigsleuth/reports/web1/report.json", "../x": "/srv/sigsleuth/reports/%2E.%2Fx/report.json"}
write_errors:
  description: Host name to the reason its report could not be written (only such hosts).
  returned: unless O(check_only)
  type: dict
  sample: {"db1": "/srv/sigsleuth/reports/db1 is not a directory of ours (a symlink or a file): not followed, not replaced"}
summary_md:
  description: The path of summary.md.
  returned: unless O(check_only)
  type: str
  sample: /srv/sigsleuth/reports/summary.md
summary_html:
  description: The path of summary.html.
  returned: unless O(check_only)
  type: str
  sample: /srv/sigsleuth/reports/summary.html
"""
