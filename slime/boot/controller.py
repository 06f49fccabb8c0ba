"""kopf wiring for slime-boot: for now SlimeBoots are validated and the verdict reported."""

from __future__ import annotations

import kopf

from slime.boot.api import SLIME_BOOT
from slime.framework.acceptance import register_acceptance
from slime.framework.runtime import ModuleRuntime


def register(registry: kopf.OperatorRegistry, runtime: ModuleRuntime) -> None:
    register_acceptance(registry, SLIME_BOOT)
