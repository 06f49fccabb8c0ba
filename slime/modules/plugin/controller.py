"""kopf wiring for the plugin module: for now its CRs are validated and the verdict reported."""

from __future__ import annotations

import kopf

from slime.framework.acceptance import register_acceptance
from slime.framework.runtime import ModuleRuntime
from slime.modules.plugin.api import KINDS


def register(registry: kopf.OperatorRegistry, runtime: ModuleRuntime) -> None:
    for info in KINDS:
        register_acceptance(registry, info)
