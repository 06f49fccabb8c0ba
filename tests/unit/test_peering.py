"""The peering rule background loops pause by: kopf's (a live peer of equal or higher priority)."""

from __future__ import annotations

import datetime

from slime.framework.peering import is_active

NOW = datetime.datetime(2026, 11, 22, 12, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: float = 1, lifetime: int = 60) -> dict[str, object]:
    seen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_alone_or_highest_is_active() -> None:
    assert is_active(None, "me", 10, NOW)
    assert is_active({"me": peer(10)}, "me", 10, NOW)
    assert is_active({"me": peer(10), "other": peer(5)}, "me", 10, NOW)


def test_a_live_peer_of_higher_or_equal_priority_pauses() -> None:
    assert not is_active({"me": peer(10), "other": peer(20)}, "me", 10, NOW)
    assert not is_active({"me": peer(10), "other": peer(10)}, "me", 10, NOW)


def test_dead_peers_and_malformed_records() -> None:
    assert is_active({"other": peer(20, seconds_ago=61)}, "me", 10, NOW)
    assert not is_active({"other": {"priority": 20}}, "me", 10, NOW)  # no lastseen: just seen, as kopf
    assert is_active({"other": "garbage"}, "me", 10, NOW)
    naive = {"priority": 20, "lifetime": 60, "lastseen": NOW.replace(tzinfo=None).isoformat()}
    assert not is_active({"other": naive}, "me", 10, NOW)  # kopf writes UTC; a naive time is UTC too
