# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback for bench/bench_fleet.py: where a playbook's wall time goes, task by task.

Writes JSON to $SIGSLEUTH_TIMING_FILE at the end of the run: the time from the callback's load (close to
ansible-playbook's start) to the first task, each task's span (its start to the start of the next, so the
strategy's own work between tasks is counted with it), and the end. Only for measuring; not part of the
collection.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: sigsleuth_timing
type: aggregate
short_description: Per-task wall time for bench/bench_fleet.py
description:
  - Writes each task's span and the start-up time to the file named by SIGSLEUTH_TIMING_FILE.
requirements:
  - enable in configuration
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "sigsleuth_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.loaded = time.monotonic()
        self.tasks = []

    def _start(self, task, kind):
        self.tasks.append({"name": task.get_name(), "action": task.action, "kind": kind,
                           "start": time.monotonic()})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task, "task")

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, "handler")

    def v2_playbook_on_stats(self, stats):
        end = time.monotonic()
        path = os.environ.get("SIGSLEUTH_TIMING_FILE")
        if not path:
            return
        spans = []
        for index, task in enumerate(self.tasks):
            until = self.tasks[index + 1]["start"] if index + 1 < len(self.tasks) else end
            spans.append({"name": task["name"], "action": task["action"], "seconds": until - task["start"]})
        first = self.tasks[0]["start"] if self.tasks else end
        with open(path, "w") as handle:
            json.dump({"startup_s": first - self.loaded, "tasks": spans, "end": end}, handle)
