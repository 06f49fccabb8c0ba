"""slime-boot: SlimeBoot -> module Deployments, RBAC and config (validated only, for now)."""

from slime.boot.api import SLIME_BOOT
from slime.framework.module import validating_module

MODULE = validating_module("boot", (SLIME_BOOT,), "SlimeBoot -> module Deployments, RBAC, config")
