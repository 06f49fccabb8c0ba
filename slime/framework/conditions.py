"""Status conditions: one helper that sets a condition by type.

``lastTransitionTime`` only moves when the status flips, so watchers can tell how
long a CR has been Ready; ``observedGeneration`` always says which spec it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slime.framework.api import now_rfc3339


@dataclass(frozen=True)
class ConditionUpdate:
    type: str
    status: bool | str
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        if isinstance(self.status, bool):
            return "True" if self.status else "False"
        return self.status


def set_conditions(
    current: Iterable[dict[str, Any]] | None,
    updates: Iterable[ConditionUpdate],
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return the new condition list: ``current`` with ``updates`` applied by type."""
    stamp = now or now_rfc3339()
    by_type = {c["type"]: dict(c) for c in current or [] if "type" in c}
    for update in updates:
        old = by_type.get(update.type)
        status = update.status_text
        changed = old is None or old.get("status") != status
        by_type[update.type] = {
            "type": update.type,
            "status": status,
            "reason": update.reason,
            "message": update.message,
            "lastTransitionTime": stamp if changed or old is None else old.get("lastTransitionTime", stamp),
            "observedGeneration": generation,
        }
    return sorted(by_type.values(), key=lambda c: (c["type"] != "Ready", c["type"]))


def same_conditions(a: Iterable[dict[str, Any]] | None, b: Iterable[dict[str, Any]] | None) -> bool:
    """Equal ignoring nothing but order: used to skip status writes that change nothing."""
    key = lambda c: c.get("type", "")  # noqa: E731
    return sorted(a or [], key=key) == sorted(b or [], key=key)
