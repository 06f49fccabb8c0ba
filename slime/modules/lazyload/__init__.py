"""lazyload: each workload's Sidecar names only the services it calls (ServiceFence -> Sidecar).

Calls to anything else take the fallback route through the global-sidecar, which forwards them to
their original destination and reports them (gRPC access log); the module learns the dependency and
adds it to the caller's Sidecar.
"""

from __future__ import annotations

from slime.framework.kinds import (
    CONFIG_MAP,
    DEPLOYMENT,
    DESTINATION_RULE,
    ENDPOINT_SLICE,
    ENDPOINTS,
    ENVOY_FILTER,
    NAMESPACE,
    POD,
    SERVICE,
    SIDECAR,
    VIRTUAL_SERVICE,
)
from slime.framework.module import Module
from slime.modules.lazyload.api import KINDS, SERVICE_FENCE
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
    # ServiceFences: auto-fence plans against the fences that exist; Pods: workload fences
    # (general.fenceLabelKeyAlias; the informer is shared with the limiter's).
    reads=(SERVICE, NAMESPACE, VIRTUAL_SERVICE, ENDPOINTS, ENDPOINT_SLICE, SERVICE_FENCE.kind_ref, POD),
    # One Sidecar per fence. The fallback route (global-sidecar Deployment, Service, ConfigMaps, EnvoyFilters,
    # DestinationRule) and auto-fence's ServiceFences are written by the hooks themselves.
    writes=(SIDECAR,),
    manages=(DEPLOYMENT, SERVICE, CONFIG_MAP, ENVOY_FILTER, DESTINATION_RULE, SERVICE_FENCE.kind_ref),
    hooks="slime.modules.lazyload.controller:LazyloadHooks",
    description="ServiceFence -> Sidecar: each workload sees only the services it calls",
)
