"""The lazyload module: ServiceFence -> Sidecar (validated only, for now)."""

from slime.framework.module import validating_module
from slime.modules.lazyload.api import SERVICE_FENCE

MODULE = validating_module("lazyload", (SERVICE_FENCE,), "ServiceFence -> Sidecar")
