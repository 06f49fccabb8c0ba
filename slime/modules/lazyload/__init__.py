"""lazyload: each workload's Sidecar names only the services it calls (ServiceFence -> Sidecar).

Calls to anything else take the fallback route through the global-sidecar, which forwards them to
their original destination and reports them (gRPC access log); the module learns the dependency and
adds it to the caller's Sidecar.
"""

from __future__ import annotations

from slime.framework.kinds import ENDPOINT_SLICE, ENDPOINTS, NAMESPACE, SERVICE, SIDECAR, VIRTUAL_SERVICE
from slime.framework.module import Module
from slime.modules.lazyload.api import KINDS
from slime.modules.lazyload.config import Fence
from slime.modules.lazyload.context import fence_context, fence_queries
from slime.modules.lazyload.render import render

MODULE = Module(
    name="lazyload",
    kinds=KINDS,
    config=Fence,
    context=fence_context,
    render=render,
    queries=fence_queries,
    # Services: fromService, labelSelector, ns/*, auto-fence; Endpoints/EndpointSlices: caller IP -> Service
    # (access log); Namespaces: namespaceSelector, auto-fence; VirtualServices: dependency expansion.
    reads=(SERVICE, NAMESPACE, VIRTUAL_SERVICE, ENDPOINTS, ENDPOINT_SLICE),
    # One Sidecar per fence. The fallback route (global-sidecar Deployment, Service, ConfigMaps, EnvoyFilters,
    # DestinationRule: FALLBACK_WRITES) and auto-fence's ServiceFences are module-level writes of the hooks,
    # which the contract does not declare yet (so no RBAC for them: see controller.py).
    writes=(SIDECAR,),
    hooks="slime.modules.lazyload.controller:LazyloadHooks",
    description="ServiceFence -> Sidecar: each workload sees only the services it calls",
)
