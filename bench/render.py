"""Render throughput: SmartLimiters/s through the pure render, single process, no cluster.

Contexts come from ``limiter_context`` over kopf-index-shaped collections, as the controller
builds them: the Service by key, the pods of the whole namespace, the namespace's
DestinationRules. Building the context and rendering are timed apart, and together.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from bench.mix import Item, items, module_general
from slime.framework.config import default_module_config
from slime.modules.limiter.api import LimiterConfig
from slime.modules.limiter.context import limiter_context
from slime.modules.limiter.render import LimiterContext, render_smartlimiter


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Calls of ``fn`` (each doing ``fn()`` units of work) for about ``seconds``; units per second."""
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def run(limiters: int = 1000, namespaces: int = 10, seconds: float = 3.0) -> dict[str, Any]:
    config = LimiterConfig.model_validate(module_general("1s"))
    globals_ = default_module_config("limiter").globals
    work = items(limiters, namespaces)
    services = {(it.namespace, it.name): [it.service()] for it in work}
    pods: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in work:
        pods[it.namespace] += it.pods()
    crs = [it.smartlimiter(uid=str(uuid.uuid4())) for it in work]
    metrics = [{"_base.cpu.sum": "150"} if it.kind == "adaptive" else {} for it in work]

    def context(i: int) -> LimiterContext:
        it: Item = work[i]
        return limiter_context(cr=crs[i], services=services.get((it.namespace, it.name), []),
                               pods=pods.get(it.namespace, []), destination_rules=[], metrics=metrics[i],
                               config=config, globals_=globals_, service_entries={})

    contexts = [context(i) for i in range(len(work))]
    for i, ctx in enumerate(contexts):  # the numbers mean nothing if the renders are not the real thing
        result = render_smartlimiter(crs[i], ctx)
        if result.problems or len(result.envoyfilters) != 1:
            raise AssertionError(f"{work[i]}: unexpected render {result.problems}, {len(result.envoyfilters)} EFs")

    def render_all() -> int:
        for cr, ctx in zip(crs, contexts, strict=True):
            render_smartlimiter(cr, ctx)
        return len(crs)

    def context_all() -> int:
        for i in range(len(crs)):
            context(i)
        return len(crs)

    def both_all() -> int:
        for i, cr in enumerate(crs):
            render_smartlimiter(cr, context(i))
        return len(crs)

    out: dict[str, Any] = {
        "limiters": limiters, "namespaces": namespaces,
        "pods_per_namespace": round(sum(len(p) for p in pods.values()) / namespaces),
        "render_per_s": _rate(render_all, seconds),
        "context_per_s": _rate(context_all, seconds / 2),
        "context_and_render_per_s": _rate(both_all, seconds / 2),
        "render_per_s_by_kind": {},
    }
    for kind in sorted({it.kind for it in work}):
        idx = [i for i, it in enumerate(work) if it.kind == kind]

        def one_kind(idx: list[int] = idx) -> int:
            for i in idx:
                render_smartlimiter(crs[i], contexts[i])
            return len(idx)

        out["render_per_s_by_kind"][kind] = _rate(one_kind, seconds / 4)
    return out


def report(r: dict[str, Any]) -> list[str]:
    kinds = ", ".join(f"{k} {v:,.0f}/s" for k, v in r["render_per_s_by_kind"].items())
    return [
        f"render: {r['render_per_s']:,.0f} SmartLimiters/s (pure render, {r['limiters']} limiters, 1 process)",
        f"  by kind: {kinds}",
        f"  limiter_context: {r['context_per_s']:,.0f}/s ({r['pods_per_namespace']} pods per namespace); "
        f"context + render: {r['context_and_render_per_s']:,.0f}/s",
    ]
