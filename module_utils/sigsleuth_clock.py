# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Clocks and time formatting for sigsleuth. Standard library only; Python 3.9+.
"""The trace stamps events on the boot clock; reports speak wall-clock ISO 8601 UTC.

``clock_offset_ns()`` is CLOCK_REALTIME - CLOCK_BOOTTIME, measured at arm and again at collect; a boot-clock
time converts to wall clock by adding the arm-time offset (``Clock``)."""

from __future__ import annotations

import datetime
import time

# A wall-clock step larger than this between arm and collect is reported.
CLOCK_STEP_NS = 1_000_000


def clock_offset_ns():
    """CLOCK_REALTIME - CLOCK_BOOTTIME in ns, from the tightest of a few bracketed reads."""
    best = None
    for _attempt in range(5):
        before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        real = time.time_ns()
        after = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        width = after - before
        if best is None or width < best[0]:
            best = (width, real - (before + after) // 2)
    return best[1]


def iso_utc(realtime_ns):
    """ISO 8601 UTC with microseconds: 2026-11-26T06:52:53.123456Z. None stays None."""
    if realtime_ns is None:
        return None
    seconds, nanos = divmod(int(realtime_ns), 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ".%06dZ" % (nanos // 1000)


def boot_ns(realtime_ns, offset_ns):
    """A wall-clock time on the boot clock, or None."""
    return None if realtime_ns is None or offset_ns is None else realtime_ns - offset_ns


def clock_step(offset_at_arm_ns, offset_now_ns):
    """A plain statement when the wall clock was stepped between arm and collect, else None."""
    step = offset_now_ns - offset_at_arm_ns
    if abs(step) <= CLOCK_STEP_NS:
        return None
    return ("the wall clock was stepped by %+.6f s between arm and collect; times use the arm-time offset and "
            "may be off by up to that much" % (step / 1e9))


class Clock:
    """Boot-clock ns -> wall-clock ISO strings with the offset measured at arm time."""

    def __init__(self, offset_ns):
        self.offset_ns = offset_ns

    def iso(self, boot_time_ns):
        if boot_time_ns is None or self.offset_ns is None:
            return None
        return iso_utc(boot_time_ns + self.offset_ns)

    def short(self, boot_time_ns):
        """HH:MM:SSZ, for the brief mentions in a kill's gaps."""
        text = self.iso(boot_time_ns)
        return text[11:19] + "Z" if text else "an unknown time"
