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


READY = "Ready"
MAX_MESSAGE = 1024  # characters of a condition message; longer lists end in "and N more"


def merge(updates: Iterable[ConditionUpdate]) -> list[ConditionUpdate]:
    """One condition per type, in first-seen order. A type reported several times keeps the
    first status and reason that is not True and lists every message (bounded, "and N more")."""
    groups: dict[str, list[ConditionUpdate]] = {}
    for u in updates:
        groups.setdefault(u.type, []).append(u)
    out = []
    for type_, group in groups.items():
        failing = [u for u in group if u.status_text != "True"]
        lead = (failing or group)[0]
        messages = list(dict.fromkeys(u.message for u in (failing or group) if u.message))
        out.append(ConditionUpdate(type_, lead.status, lead.reason, bounded(messages)))
    return out


def bounded(messages: list[str], limit: int = MAX_MESSAGE) -> str:
    """``a; b; c`` up to ``limit`` characters, then ``and N more``."""
    text = ""
    for i, message in enumerate(messages):
        candidate = f"{text}; {message}" if text else message
        rest = len(messages) - i - 1
        if len(candidate) > limit - (20 if rest else 0) and text:
            return f"{text}; and {len(messages) - i} more"
        text = candidate
    return text


def with_ready(updates: Iterable[ConditionUpdate], ready_reason: str, ready_message: str) -> list[ConditionUpdate]:
    """``updates`` merged by type, plus ``Ready`` unless given: False with the reason and messages
    of the failing conditions while any is False, else True with ``ready_reason``/``ready_message``."""
    merged = merge(updates)
    if any(u.type == READY for u in merged):
        return merged
    failing = [u for u in merged if u.status_text == "False"]
    if failing:
        ready = ConditionUpdate(READY, False, failing[0].reason, bounded([u.message for u in failing if u.message]))
    else:
        ready = ConditionUpdate(READY, True, ready_reason, ready_message)
    return [ready, *merged]


def set_conditions(
    current: Iterable[dict[str, Any]] | None,
    updates: Iterable[ConditionUpdate],
    generation: int,
    now: str | None = None,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Return the new condition list: ``current`` with ``updates`` applied by type. With
    ``replace``, types not in ``updates`` are dropped (the updates are the complete set)."""
    stamp = now or now_rfc3339()
    updates = list(updates)
    by_type = {c["type"]: dict(c) for c in current or [] if "type" in c}
    if replace:
        wanted = {u.type for u in updates}
        by_type = {t: c for t, c in by_type.items() if t in wanted}
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
