"""status.json's ``checked_at`` without datetime: overlap.iso_utc against datetime, the oracle.

The check unit stamped each verdict with
``datetime.datetime.now(datetime.timezone.utc).isoformat()``; it now formats the
same clock reading (``time.time_ns()``, floored to microseconds as datetime
does) itself, so the text must be the same for every instant datetime can show.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloudinit_hostrouting import overlap

UTC = datetime.timezone.utc
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
FIRST = datetime.datetime(1, 1, 1, tzinfo=UTC)
LAST = datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _ns(moment: datetime.datetime) -> int:
    delta = moment - EPOCH
    return ((delta.days * 86400 + delta.seconds) * 10 ** 6 + delta.microseconds) * 1000


def oracle(ns: int) -> str:
    """What datetime.now(utc).isoformat() gives when the clock reads ``ns``: datetime
    floors the clock to microseconds (``_PyTime_ROUND_FLOOR``)."""
    return (EPOCH + datetime.timedelta(microseconds=ns // 1000)).isoformat()


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(st.integers(_ns(FIRST), _ns(LAST) + 999))
@example(0)                              # the epoch: no fraction at all
@example(999)                            # under a microsecond: still none
@example(1000)                           # one microsecond: .000001
@example(1_700_000_000_000_000_000)      # a whole second
@example(1_700_000_000_123_456_789)      # nanoseconds dropped, not rounded
@example(1_700_000_000_999_999_999)
@example(951_782_400_000_000_000)        # 2000-02-29
@example(-1)                             # just before the epoch: floored into 1969
def test_iso_utc_matches_datetime(ns: int) -> None:
    assert overlap.iso_utc(ns) == oracle(ns)


def test_whole_seconds_have_no_fraction() -> None:
    """The edge kept exactly: isoformat leaves out ``.000000``."""
    assert overlap.iso_utc(10 ** 18) == oracle(10 ** 18) == "2001-09-09T01:46:40+00:00"
    assert overlap.iso_utc(10 ** 18 + 1000) == "2001-09-09T01:46:40.000001+00:00"


def test_the_stamp_reads_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overlap.time, "time_ns", lambda: 1_234_567_890_123_456_789)
    assert overlap._now() == oracle(1_234_567_890_123_456_789) \
        == "2009-02-13T23:31:30.123456+00:00"
    assert overlap.Unknown("why").to_dict()["checked_at"] == overlap._now()
