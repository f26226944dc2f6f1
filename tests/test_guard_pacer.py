"""The guard's pacing rules, on a synthetic clock (pure logic, no kernel needed)."""

from __future__ import annotations

from typing import List

from cloudinit_hostrouting.guard import MAX_DEBOUNCE_S, MIN_INTERVAL_S, QUIET_S, Pacer


def test_burst_is_debounced_but_never_beyond_the_cap() -> None:
    pacer = Pacer(log=lambda _line: None)
    assert pacer.due() is None
    pacer.event(100.0)
    assert pacer.due() == 100.0 + QUIET_S
    for step in range(1, 40):  # a steady stream of events, 10 ms apart
        pacer.event(100.0 + step * 0.01)
    assert pacer.due() == 100.0 + MAX_DEBOUNCE_S


def test_spaced_route_changes_never_back_off() -> None:
    """networkd reconfiguring a link every few seconds is not a fight."""
    lines: List[str] = []
    pacer = Pacer(log=lines.append)
    for i in range(20):
        pacer.ran(1000.0 + i * 5.0, changed=True)
    assert pacer.spacing() == MIN_INTERVAL_S
    assert lines == []


def test_rapid_route_changes_back_off_exponentially_and_recover() -> None:
    lines: List[str] = []
    pacer = Pacer(log=lines.append)
    spacings = []
    for i in range(8):
        pacer.ran(1000.0 + i * 0.3, changed=True)
        spacings.append(pacer.spacing())
    assert spacings[:4] == [MIN_INTERVAL_S] * 4
    assert spacings[4:] == [MIN_INTERVAL_S * 2, MIN_INTERVAL_S * 4, MIN_INTERVAL_S * 8,
                            MIN_INTERVAL_S * 16]
    assert len(lines) == 4 and "backing off" in lines[0]
    pacer.ran(1003.0, changed=False)  # a quiet reconcile ends the fight
    assert pacer.spacing() == MIN_INTERVAL_S
