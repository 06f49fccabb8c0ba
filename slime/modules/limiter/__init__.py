"""The limiter module: SmartLimiter -> EnvoyFilters with local or global rate limits.

Follow one SmartLimiter from ``kubectl apply`` to its EnvoyFilter: ``api.py`` (the model and the
CRD's schema), ``context.py`` (what the render needs from the cluster and Prometheus),
``render.py`` (the pure render: objects, status, conditions), ``controller.py`` (what only the
operator does: pod wake rules, the RLS ConfigMap writer and its finalizer).
"""

from slime.framework.kinds import CONFIG_MAP, DESTINATION_RULE, ENVOY_FILTER, POD, SERVICE, SERVICE_ENTRY
from slime.framework.module import Module, SharedOutput
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import context, queries
from slime.modules.limiter.crd import SMART_LIMITER
from slime.modules.limiter.render import render
from slime.modules.limiter.rls import build_configmap, rls_ref

MODULE = Module(
    name="limiter",
    kinds=(SMART_LIMITER,),
    config=LimiterConfig,
    context=context,
    render=render,
    queries=queries,
    reads=(SERVICE, POD, DESTINATION_RULE, SERVICE_ENTRY),
    writes=(ENVOY_FILTER,),
    shared=SharedOutput(kind=CONFIG_MAP, ref=rls_ref, build=build_configmap),
    hooks="slime.modules.limiter.controller:LimiterHooks",
    description="SmartLimiter -> EnvoyFilters with local or global rate limits",
)
