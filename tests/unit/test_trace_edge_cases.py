"""The trace parser on edge cases: over-long lines, CRLF line ends (fixtures in tests/fixtures/ftrace/edge/)."""

import io
import os
import tracemalloc

import pytest

from ansible.module_utils import sigsleuth_trace_parser as trace_parser
from ansible.module_utils.sigsleuth_trace_parser import TraceStats, iter_events

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "ftrace")


def parse(path, chunk_size=trace_parser.CHUNK):
    stats = TraceStats()
    with open(os.path.join(FIXTURES, path), "rb") as stream:
        return list(iter_events(stream, stats, chunk_size=chunk_size)), stats


@pytest.mark.parametrize("chunk_size", [1 << 20, 1 << 16, 4096, 1000, 97])
def test_overlong_lines_are_skipped_and_counted_wherever_the_reads_cut_them(chunk_size):
    events, stats = parse("edge/overlong_line.trace", chunk_size)
    assert [fields[4] for _, _, _, _, _, fields in events] == [11, 13]
    # a 70,123-byte record and a 70,000-byte last line without its newline
    assert stats.malformed == 2 and stats.skipped_bytes == 70123 + 70000
    assert stats.lines == 6 and stats.as_dict()["bytes_skipped"] == 140123


class _EndlessLine:
    """A stream of one line that never ends."""

    def __init__(self, size):
        self.left = size

    def read(self, size):
        size = min(size, self.left)
        self.left -= size
        return b"x" * size


def test_a_line_without_newline_does_not_take_memory():
    stats = TraceStats()
    tracemalloc.start()
    try:
        assert list(iter_events(_EndlessLine(32 << 20), stats)) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * trace_parser.CHUNK  # the read and what is held over, never the line
    assert stats.malformed == 1 and stats.skipped_bytes == 32 << 20 and stats.lines == 1


def test_crlf_line_ends_read_as_lf():
    crlf_events, crlf = parse("edge/hostile_names_crlf.trace")
    lf_events, lf = parse("forensics_hostile_names.trace")
    assert crlf_events == lf_events and len(lf_events) == lf.events > 0
    assert crlf.malformed == lf.malformed == 0 and crlf.lines == lf.lines
    assert crlf.crlf and not lf.crlf and crlf.as_dict()["line_ends"] == "crlf" and "line_ends" not in lf.as_dict()
    # the names with a newline in them are whole again, without the CR the copy added
    assert "nl\nname x" in {fields[3] for name, _, _, _, _, fields in crlf_events if name == "signal_generate"}


def test_carriage_returns_in_names_of_an_lf_trace_are_kept():
    events, stats = parse("edge/cr_in_names.trace")
    assert [fields[3] for _, _, _, _, _, fields in events] == ["a\r\nb", "c\r"]
    assert stats.malformed == 0 and not stats.crlf


def test_chunked_crlf_reads_agree():
    with open(os.path.join(FIXTURES, "edge", "hostile_names_crlf.trace"), "rb") as handle:
        data = handle.read()
    whole = list(iter_events(io.BytesIO(data), TraceStats()))
    assert list(iter_events(io.BytesIO(data), TraceStats(), chunk_size=61)) == whole


def test_numbers_too_long_for_int_are_no_record():
    """int() refuses more than 4,300 digits: such a field must make the line malformed, not end the read."""
    events, stats = parse("edge/huge_numbers.trace")
    assert [(tid, fields[4]) for _, _, _, tid, _, fields in events] == [(101, 5)]
    assert stats.malformed == 2
