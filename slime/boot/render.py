"""SlimeBoot -> module Deployments, their config, ServiceAccount, RBAC and Service (pure).

The plan (``slime.boot.plan``) decides every value; the Jinja2 templates packaged with the module
(``slime/boot/templates``) lay them out. Every value enters a template through ``tojson`` (one JSON
token on one line, so no user string can add YAML structure), the output is parsed with a
safe YAML loader and checked (kinds, names, namespaces, selectors) before it is returned. A
template error is a ``Ready=False`` condition, never an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from slime.boot.api import SlimeBootSpec
from slime.boot.config import BootConfig
from slime.boot.plan import CONFIG_HASH, Plan, missing_namespaces, plan
from slime.framework.conditions import ConditionUpdate
from slime.framework.kinds import (
    CLUSTER_PEERING,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    CONFIG_MAP,
    DEPLOYMENT,
    SERVICE,
    SERVICE_ACCOUNT,
)
from slime.framework.module import Rendered
from slime.framework.validation import parse_spec

WRITES = (CLUSTER_PEERING, CONFIG_MAP, SERVICE_ACCOUNT, CLUSTER_ROLE, CLUSTER_ROLE_BINDING, DEPLOYMENT, SERVICE)
MODULE_TEMPLATES = ("peering", "configmap", "serviceaccount", "rbac", "deployment", "service")
CRD_CONDITION = "CRDCompatible"
# Characters JSON leaves raw that YAML refuses (C1 controls, surrogates, non-characters) or reads as
# a line break inside a quoted string (NEL, LS, PS): escaped again for the YAML reader.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\ud800-\udfff\ufffe\uffff\u2028\u2029]")


class TemplateError(Exception):
    """The templates produced something that is not what the plan asked for."""


def tojson(value: Any) -> str:
    """One JSON token, which YAML reads back as exactly ``value``. An undefined value fails here,
    naming it (a filter gets StrictUndefined without it raising)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    text = json.dumps(value, ensure_ascii=False, sort_keys=False, separators=(", ", ": "))
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


ENV = jinja2.Environment(loader=jinja2.PackageLoader("slime.boot", "templates"), undefined=jinja2.StrictUndefined,
                         autoescape=False, keep_trailing_newline=True, trim_blocks=False)
ENV.filters["tojson"] = tojson


@dataclass(frozen=True)
class BootContext:
    config: BootConfig
    catalog: Mapping[str, Any]
    namespaces: tuple[str, ...] | None = None  # existing namespaces; None: unknown (not checked)
    crd: tuple[bool, str] | None = None  # (ours, message) about the installed SlimeBoot CRD; None: not seen


# libyaml's safe loader when PyYAML has it (~10x faster than the pure-Python one), else the latter.
SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_all(text: str) -> list[Any]:
    """The documents of a template's output, read safely (no tags, no objects)."""
    return [d for d in yaml.load_all(text, Loader=SafeLoader) if d is not None]  # noqa: S506 - a safe loader


def _docs(template: str, **values: Any) -> list[dict[str, Any]]:
    text = ENV.get_template(f"{template}.yaml.j2").render(**values)
    docs = load_all(text)
    for doc in docs:
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
            raise TemplateError(f"template {template}: produced {type(doc).__name__}, not an object")
    return docs


def _check(obj: dict[str, Any], namespace: str) -> None:
    meta, kind = obj["metadata"], next((k for k in WRITES if k.kind == obj.get("kind")), None)
    if kind is None or obj.get("apiVersion") != kind.api_version:
        raise TemplateError(f"{obj.get('apiVersion')} {obj.get('kind')}: not a kind boot writes")
    if kind.namespaced != ("namespace" in meta) or (kind.namespaced and meta["namespace"] != namespace):
        raise TemplateError(f"{kind.kind} {meta.get('name')}: namespace {meta.get('namespace')!r}, "
                            f"expected {namespace if kind.namespaced else 'none'}")
    if kind is DEPLOYMENT:
        selector = obj["spec"]["selector"]["matchLabels"]
        labels = obj["spec"]["template"]["metadata"]["labels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            raise TemplateError(f"Deployment {meta['name']}: the selector does not select its own Pods")


def objects(p: Plan) -> list[dict[str, Any]]:
    out = []
    for m in p.modules:
        for template in MODULE_TEMPLATES:
            for obj in _docs(template, m=m):
                _check(obj, m["namespace"])
                out.append(obj)
    return out


def _label(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{obj['kind']} {meta['namespace']}/{meta['name']}" if "namespace" in meta else \
        f"{obj['kind']} {meta['name']}"


def render(cr: Mapping[str, Any], ctx: BootContext) -> Rendered:
    conditions = []
    if ctx.crd is not None and not ctx.crd[0]:  # only said when wrong: a cluster with slime's CRD and
        # `slime render` without any CRD give the same status
        conditions.append(ConditionUpdate(CRD_CONDITION, False, "ForeignCRD", ctx.crd[1]))
    spec, problems = parse_spec(SlimeBootSpec, cr.get("spec"))
    if spec is None:
        return Rendered(conditions=[ConditionUpdate("Ready", False, "InvalidSpec", "; ".join(problems)), *conditions])
    p = plan(spec, cr.get("spec") or {}, ctx.catalog, ctx.config)
    if p.problems:
        message = "; ".join(dict.fromkeys(x.message for x in p.problems))
        return Rendered(status={"notes": p.notes},
                        conditions=[ConditionUpdate("Ready", False, p.problems[0].reason, message), *conditions])
    missing = missing_namespaces(p, ctx.namespaces)
    if missing:
        message = f"spec.namespace: namespace {', '.join(missing)} not found (create it first)"
        return Rendered(conditions=[ConditionUpdate("Ready", False, "NamespaceNotFound", message), *conditions])
    try:
        out = objects(p)
    except (jinja2.TemplateError, yaml.YAMLError, TemplateError, KeyError, TypeError) as e:
        message = f"the boot templates failed: {type(e).__name__}: {e}"
        return Rendered(conditions=[ConditionUpdate("Ready", False, "TemplateError", message), *conditions])
    modules = [{"name": m["name"], "kinds": m["kinds"], "image": m["image"],
                "configHash": m["podAnnotations"][CONFIG_HASH]} for m in p.modules]
    status = {"modules": modules, "objects": sorted(_label(o) for o in out), "notes": p.notes}
    names = ", ".join(f"{m['name']} ({'+'.join(m['kinds'])})" for m in p.modules) or "no module enabled"
    ready = ConditionUpdate("Ready", True, "Deployed", f"in {spec.namespace}: {names}")
    return Rendered(objects=out, status=status, conditions=[ready, *conditions])
