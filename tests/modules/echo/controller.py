"""The echo module's hooks: a Namespace event wakes the Echoes that write into it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from slime.framework.kinds import Kind
from slime.framework.module import Hooks, Obj


class EchoHooks(Hooks):
    def dependents(self, kind: Kind, namespace: str, name: str, obj: Obj,
                   crs: Mapping[tuple[str, str], dict[str, Any]]) -> Iterable[tuple[str, str]]:
        return list(crs)  # few Echoes: any Namespace change may concern any of them
