"""A test module, to show that a module is a folder plus one registry entry: ``Echo``
(``test.slime.io/v1``) writes one ConfigMap per copy holding its message, in its own namespace or
in ``spec.namespace`` (a child GC cannot reach: removed by label under the owner's finalizer).

Nothing outside this folder names it; the tests add it with ``SLIME_EXTRA_MODULES`` and the CLI,
the CRD generator, ``slime render``, the golden runner and the operator pick it up.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from slime.framework.api import SlimeModel, StatusBase
from slime.framework.conditions import ConditionUpdate
from slime.framework.crdinfo import CrdInfo
from slime.framework.kinds import CONFIG_MAP, NAMESPACE
from slime.framework.module import ClusterView, Metrics, Module, Obj, Rendered, Settings
from slime.framework.validation import parse_spec


class EchoSpec(SlimeModel):
    message: str = Field(description="What each ConfigMap holds")
    copies: int = Field(1, ge=0, le=5, description="How many ConfigMaps")
    namespace: str = Field("", description="Where the ConfigMaps go (default: the Echo's own namespace)")


class EchoStatus(StatusBase):
    written: list[str] = Field(default_factory=list, description="The ConfigMaps written")


class EchoConfig(SlimeModel):
    prefix: str = Field("", description="Put before every message")


ECHO = CrdInfo(group="test.slime.io", version="v1", kind="Echo", plural="echoes", singular="echo",
               short_names=(), spec=EchoSpec, status=EchoStatus)


def context(cr: Obj, cluster: ClusterView, settings: Settings, metrics: Metrics) -> dict[str, Any]:
    spec = cr.get("spec") or {}
    target = spec.get("namespace") or (cr.get("metadata") or {}).get("namespace")
    exists = not spec.get("namespace") or cluster.get(NAMESPACE, None, str(target)) is not None
    return {"namespace": target, "exists": exists, "prefix": settings.general.prefix}


def render(cr: Obj, ctx: dict[str, Any]) -> Rendered:
    spec, problems = parse_spec(EchoSpec, cr.get("spec"))
    if spec is None:
        return Rendered(conditions=[ConditionUpdate("Ready", False, "InvalidSpec", "; ".join(problems))])
    if not ctx["exists"]:
        return Rendered(objects=[], conditions=[
            ConditionUpdate("Ready", False, "NoNamespace", f"spec.namespace: namespace {ctx['namespace']} not found")])
    name = cr["metadata"]["name"]
    objects = [{"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": f"{name}-{i}", "namespace": ctx["namespace"]},
                "data": {"message": ctx["prefix"] + spec.message}} for i in range(spec.copies)]
    return Rendered(objects=objects, status={"written": [o["metadata"]["name"] for o in objects]})


MODULE = Module(name="echo", kinds=(ECHO,), config=EchoConfig, context=context, render=render,
                reads=(NAMESPACE,), writes=(CONFIG_MAP,), hooks="tests.modules.echo.controller:EchoHooks",
                description="Echo -> ConfigMaps (a test module)")
