# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# One transaction for the arming modules: plan, check-mode exit, apply, undo on failure. Stdlib only.
"""Modelled on ansible.posix's FirewallTransaction: a module plans its changes as steps, then `run()`
either reports them (check mode), or makes them in order and, when one fails, takes back the ones already
made in reverse order, so the host is left as it was found.

A step is a description ("create /sys/kernel/tracing/instances/sigsleuth"), a function that makes the
change (returning False when it found nothing to do after all) and, optionally, one that takes it back
(also after that step itself failed part-way, so it must cope with a change made only in part).
Steps may share state through closures: a later step can read what an earlier one found (the pid of a
started daemon, say).
"""

from __future__ import annotations

import collections

from ansible.module_utils.sigsleuth_command import SigsleuthError

Step = collections.namedtuple("Step", "description apply undo quiet")


class Transaction:
    """The planned changes of one module run, and their result."""

    def __init__(self, module, **result):
        self.module = module
        self.result = dict(result)
        self.steps = []
        self.done = []  # steps made already: those observation needed (a mount), then those run() makes
        self.ran = False

    def add(self, description, apply, undo=None, quiet=False):
        """Plan one change. A quiet step (bookkeeping such as the state file) is not listed in msg."""
        self.steps.append(Step(description, apply, undo, quiet))

    def applied(self, description, undo=None):
        """A change that had to be made before the rest could be planned (mounting tracefs to read its
        events): it is taken back like any other when the module fails."""
        self.done.append(Step(description, None, undo, False))

    def fail(self, **fields):
        """fail_json after taking back what was made already."""
        self._undo(self.done)
        self.module.fail_json(**fields)

    @property
    def changed(self):
        return bool(self.steps or self.done)

    def descriptions(self):
        """What was done (after run) or is planned (before), in order; quiet steps left out."""
        steps = self.done if self.ran else self.done + self.steps
        return [step.description for step in steps if not step.quiet]

    def exit_unchanged(self, msg, **extra):
        self.module.exit_json(changed=False, msg=msg, **dict(self.result, **extra))

    def run(self, done_msg, would_msg=None, **failure):
        """Exit the module: unchanged, would-change (check mode), changed, or failed with everything undone.

        done_msg / would_msg: the msg on success / in check mode (default: "would " + the descriptions);
        either may be a function of the transaction, called once the steps have run. `failure` adds to the
        fail_json of a failed step (instance_path=..., say).
        """
        if not self.changed:
            self.exit_unchanged(done_msg(self) if callable(done_msg) else done_msg)
        if self.module.check_mode:
            text = would_msg(self) if callable(would_msg) else would_msg
            actions = ", ".join(self.descriptions()) or "record the state"
            self.module.exit_json(changed=True, msg=text or "would " + actions, **self.result)
        self.ran = True
        try:
            for step in self.steps:
                if step.apply() is not False:
                    self.done.append(step)
        except SigsleuthError as exc:
            self.done.append(step)  # a step that failed part-way takes back its own part too
            self.fail(**dict(failure, **exc.result()))
        except (OSError, ValueError) as exc:
            self.done.append(step)
            self.fail(msg="cannot %s: %s" % (step.description, exc), **failure)
        self.module.exit_json(changed=True, msg=done_msg(self) if callable(done_msg) else done_msg, **self.result)

    def _undo(self, done):
        for step in reversed(done):
            if step.undo is None:
                continue
            try:
                step.undo()
            except (SigsleuthError, OSError, ValueError) as exc:
                self.module.warn("could not take back '%s': %s" % (step.description, getattr(exc, "msg", exc)))
