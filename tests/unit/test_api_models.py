"""PluginManager, EnvoyPlugin, ServiceFence and SlimeBoot models against upstream's data files."""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, BaseModel

from slime.boot.api import SLIME_BOOT
from slime.framework.crdinfo import CrdInfo
from slime.framework.schema import PRESERVE, model_schema
from slime.framework.validation import parse_spec
from slime.modules.lazyload.api import SERVICE_FENCE, ServiceFenceSpec, ServiceFenceStatus
from slime.modules.plugin.api import ENVOY_PLUGIN, PLUGIN_MANAGER, PluginManagerSpec
from tests.compat import COMPAT, require_compat

KINDS: dict[str, CrdInfo] = {i.kind: i for i in (PLUGIN_MANAGER, ENVOY_PLUGIN, SERVICE_FENCE, SLIME_BOOT)}

# Upstream's e2e samples are templates; its test framework fills these in.
PLACEHOLDERS = {"strictRev": "true", "istioRevKey": "istio.io/rev", "istioRevValue": "1-10-2"}

# Samples holding a field upstream silently dropped (its CRD prunes it): we reject those,
# naming the field. Everything else must validate.
REJECTED = {
    ("slimeboot_namespace_prometheus.yaml", "lazyload"): ("module", 0, "globalSidecarMode"),
}


def _documents(path: Path) -> list[Any]:
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: PLACEHOLDERS.get(m[1], f"x-{m[1]}"), path.read_text())
    return list(yaml.safe_load_all(text))


def _compat_objects() -> list[Any]:
    found = []
    for path in sorted(COMPAT.rglob("*.yaml")):
        for doc in _documents(path):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                case = f"{path.relative_to(COMPAT)}:{doc['metadata']['name']}"
                found.append(pytest.param(path.name, doc, id=case))
    return found


def _compat_crds() -> list[Any]:
    found = []
    for path in sorted(COMPAT.rglob("*.yaml")):
        for doc in _documents(path):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                if doc["spec"]["names"]["kind"] in KINDS:
                    found.append(pytest.param(doc, id=f"{path.name}:{doc['spec']['names']['kind']}"))
    return found


OBJECTS = _compat_objects()


def test_corpus_covers_every_kind() -> None:
    require_compat()
    kinds = {p.values[1]["kind"] for p in OBJECTS}
    assert kinds == set(KINDS), "compat files moved? every kind should have samples"
    assert len(OBJECTS) >= 14


def _pop(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data.pop(path[-1])


@pytest.mark.parametrize(("filename", "obj"), OBJECTS)
def test_compat_object_validates(filename: str, obj: dict[str, Any]) -> None:
    info = KINDS[obj["kind"]]
    spec = copy.deepcopy(obj.get("spec") or {})
    rejected = REJECTED.get((filename, obj["metadata"]["name"]))
    if rejected:
        _, problems = parse_spec(info.spec, spec)
        assert any(
            p.startswith("spec" + "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in rejected))
            for p in problems
        ), problems
        _pop(spec, rejected)
    model, problems = parse_spec(info.spec, spec)
    assert problems == [] and model is not None
    if "status" in obj:
        info.status.model_validate(obj["status"])


def _respell(model: type[BaseModel], data: Any) -> Any:
    """Swap every two-spelling key to its other spelling, recursively."""
    if not isinstance(data, dict):
        return data
    out = {}
    for name, field in model.model_fields.items():
        choices = field.validation_alias.choices if isinstance(field.validation_alias, AliasChoices) else []
        keys = [c for c in choices if isinstance(c, str)] or [field.alias or name]
        for key in keys:
            if key in data:
                other = keys[(keys.index(key) + 1) % len(keys)]
                out[other] = _respell_value(field.annotation, data[key])
    return out


def _respell_value(annotation: Any, value: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _respell(annotation, value)
    if origin is list and isinstance(value, list):
        return [_respell_value(args[0], v) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _respell_value(args[1], v) for k, v in value.items()}
    for member in args if origin is not None else ():  # X | None
        if isinstance(member, type) and issubclass(member, BaseModel):
            return _respell(member, value)
    return value


@pytest.mark.parametrize(("filename", "obj"), OBJECTS)
def test_compat_object_validates_in_the_other_spelling(filename: str, obj: dict[str, Any]) -> None:
    info = KINDS[obj["kind"]]
    spec = copy.deepcopy(obj.get("spec") or {})
    rejected = REJECTED.get((filename, obj["metadata"]["name"]))
    if rejected:
        _pop(spec, rejected)
    respelled = _respell(info.spec, spec)
    assert info.spec.model_validate(respelled) == info.spec.model_validate(spec)


def test_respell_changes_spelling() -> None:
    # Guards the test above: it must really exercise the second spelling.
    spec = {"workload_labels": {"app": "a"}, "plugin": [{"type_url": "t", "wasm": {"plugin_name": "p"}}]}
    respelled = _respell(PLUGIN_MANAGER.spec, spec)
    assert respelled == {
        "workloadLabels": {"app": "a"},
        "plugin": [{"typeUrl": "t", "wasm": {"pluginName": "p"}}],
    }


def test_both_spellings_of_plugin_fields() -> None:
    camel = {
        "workloadLabels": {"app": "gw"},
        "plugin": [
            {
                "enable": True,
                "name": "f",
                "typeUrl": "type.googleapis.com/x",
                "protocol": "Generic",
                "genericAppProtocol": "thrift",
                "disableOnFilterLevel": True,
                "rider": {"pluginName": "p", "imagePullSecretName": "s"},
            }
        ],
    }
    spec = PLUGIN_MANAGER.spec.model_validate(camel)
    assert spec == PLUGIN_MANAGER.spec.model_validate(_respell(PLUGIN_MANAGER.spec, camel))
    assert spec.model_dump()["plugin"][0]["generic_app_protocol"] == "thrift"
    ep = ENVOY_PLUGIN.spec.model_validate({"workload_selector": {"labels": {"a": "b"}}})
    assert ep == ENVOY_PLUGIN.spec.model_validate({"workloadSelector": {"labels": {"a": "b"}}})


def test_enums_by_name_or_number() -> None:
    plugin = PluginManagerSpec.model_validate({"plugin": [{"listenerType": 2, "protocol": 1}]}).plugin[0]
    assert (plugin.listenerType, plugin.protocol) == (2, 1)
    status = ServiceFenceStatus.model_validate(
        {"domains": {"a": {"hosts": ["a"], "status": "EXPIREWAIT"}, "b": {"status": 1}}}
    )
    assert [d.status for d in status.domains.values()] == ["EXPIREWAIT", 1]


def test_servicefence_status_as_upstream_wrote_it() -> None:
    # jsonpb wrote int64 as strings and left ACTIVE out.
    status = ServiceFenceStatus.model_validate(
        {
            "domains": {"d.default.svc.cluster.local": {"hosts": ["d.default.svc.cluster.local"]}},
            "metricStatus": {'{destination_service="d.default.svc.cluster.local"}': "1"},
            "visitor": {"default/p": True},
        }
    )
    assert status.domains["d.default.svc.cluster.local"].status == "ACTIVE"
    spec = ServiceFenceSpec.model_validate(
        {"host": {"w": {"deadline": {"expire": {"seconds": "1700000000"}}}}}
    )
    assert spec.host["w"] is not None and spec.host["w"].deadline is not None
    assert spec.host["w"].deadline.expire is not None and spec.host["w"].deadline.expire.seconds == 1700000000


INVALID: list[tuple[CrdInfo, dict[str, Any], str]] = [
    (PLUGIN_MANAGER, {"plugin": [{"name": "a", "enabel": True}]}, "spec.plugin[0].enabel: unknown field"),
    (PLUGIN_MANAGER, {"plugin": [{"listenerType": "Sidecar"}]}, "spec.plugin[0].listenerType"),
    (PLUGIN_MANAGER, {"plugin": [{"protocol": "SOAP"}]}, "spec.plugin[0].protocol"),
    (
        PLUGIN_MANAGER,
        {"plugin": [{"inline": {}, "wasm": {}}]},
        "spec.plugin[0]: set at most one",
    ),
    (PLUGIN_MANAGER, {"plugin": [{"inline": {"settings": "x"}}]}, "spec.plugin[0].inline.settings"),
    (
        PLUGIN_MANAGER,
        {"plugin": [{"wasm": {"imagePullSecretName": "a", "imagePullSecretContent": "b"}}]},
        "spec.plugin[0].wasm: set at most one",
    ),
    (PLUGIN_MANAGER, {"plugin": [{"rawPatch": ["x"]}]}, "spec.plugin[0].rawPatch"),
    (PLUGIN_MANAGER, {"workload_labels": {"app": 1}}, "spec.workload_labels.app"),
    (PLUGIN_MANAGER, {"workload_labels": {}, "workloadLabels": {}}, "spec.workloadLabels"),
    (PLUGIN_MANAGER, {"priority": "high"}, "spec.priority"),
    (PLUGIN_MANAGER, {"plugins": []}, "spec.plugins: unknown field"),
    (ENVOY_PLUGIN, {"listener": [{"port": "http"}]}, "spec.listener[0].port"),
    (
        ENVOY_PLUGIN,
        {"listener": [{"port": 80, "portname": "http"}]},
        "spec.listener[0].portname: unknown field",
    ),
    (ENVOY_PLUGIN, {"workloadSelector": {"label": {"a": "b"}}}, "spec.workloadSelector.label: unknown field"),
    (ENVOY_PLUGIN, {"route": "vh/r"}, "spec.route"),
    (ENVOY_PLUGIN, {"plugins": [{"rider": {"url": 3}}]}, "spec.plugins[0].rider.url"),
    (SERVICE_FENCE, {"host": {"a.b": {"stabel": {}}}}, "spec.host.a.b.stabel: unknown field"),
    (
        SERVICE_FENCE,
        {"host": {"a": {"deadline": {"expire": {"seconds": "soon"}}}}},
        "spec.host.a.deadline.expire.seconds",
    ),
    (SERVICE_FENCE, {"labelSelector": [{"selector": {"app": ["a"]}}]}, "spec.labelSelector[0].selector.app"),
    (SERVICE_FENCE, {"labelSelector": {"app": "a"}}, "spec.labelSelector"),
    (SERVICE_FENCE, {"workloadSelector": {"fromService": "maybe"}}, "spec.workloadSelector.fromService"),
    (SERVICE_FENCE, {"enabled": True}, "spec.enabled: unknown field"),
    (SLIME_BOOT, {"imagee": {}}, "spec.imagee: unknown field"),
    (SLIME_BOOT, {"replicaCount": "two"}, "spec.replicaCount"),
    (SLIME_BOOT, {"module": [{"name": "x", "mode": "Bundle"}]}, "spec.module[0].mode"),
    (
        SLIME_BOOT,
        {"module": [{"name": "x", "global": {"misc": {"enableLeaderElection": True}}}]},
        "spec.module[0].global.misc.enableLeaderElection",
    ),
    (
        SLIME_BOOT,
        {"module": [{"name": "x", "global": {"log": {"klogLevel": "loud"}}}]},
        "spec.module[0].global.log.klogLevel",
    ),
    (
        SLIME_BOOT,
        {"module": [{"name": "x", "global": {"istioRevs": "a"}}]},
        "spec.module[0].global.istioRevs",
    ),
    (
        SLIME_BOOT,
        {
            "module": [
                {"name": "x", "metric": {"prometheus": {"address": "a", "handlers": {"h": {"type": "Sum"}}}}}
            ]
        },
        "spec.module[0].metric.prometheus.handlers.h.type",
    ),
    (SLIME_BOOT, {"module": [{"name": "x", "general": ["a"]}]}, "spec.module[0].general"),
    (
        SLIME_BOOT,
        {"component": {"globalSidecar": {"sidecarInject": {"mode": "cluster"}}}},
        "spec.component.globalSidecar.sidecarInject.mode",
    ),
    (SLIME_BOOT, {"image": {"pullPolicy": "Sometimes"}}, "spec.image.pullPolicy"),
    (SLIME_BOOT, {"service": {"port": "http"}}, "spec.service.port"),
]


@pytest.mark.parametrize(("info", "spec", "expected"), INVALID, ids=[e for _, _, e in INVALID])
def test_invalid_spec_is_rejected_naming_the_field(
    info: CrdInfo, spec: dict[str, Any], expected: str
) -> None:
    model, problems = parse_spec(info.spec, spec)
    assert model is None
    assert any(p.startswith(expected) for p in problems), problems


def test_invalid_status_is_rejected() -> None:
    with pytest.raises(ValueError, match="domains.a.status"):
        SERVICE_FENCE.status.model_validate({"domains": {"a": {"status": "GONE"}}})
    with pytest.raises(ValueError, match="observedGeneration"):
        PLUGIN_MANAGER.status.model_validate({"observedGeneration": "new"})


@pytest.mark.parametrize("crd", _compat_crds())
def test_identity_matches_upstream_crd(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    info = KINDS[names["kind"]]
    assert (info.group, info.plural, info.singular, info.scope) == (
        crd["spec"]["group"],
        names["plural"],
        names["singular"],
        crd["spec"]["scope"],
    )
    assert info.version in [v["name"] for v in crd["spec"]["versions"]]
    assert set(names.get("shortNames", [])) <= set(info.short_names)
    assert info.crd_name == crd["metadata"]["name"]


def _undeclared(upstream: dict[str, Any], ours: dict[str, Any], path: str) -> list[str]:
    """Fields upstream's schema declares that ours would reject."""
    if ours.get(PRESERVE) and "properties" not in ours and "additionalProperties" not in ours:
        return []
    missing = []
    for key, sub in upstream.get("properties", {}).items():
        if key in ours.get("properties", {}):
            missing += _undeclared(sub, ours["properties"][key], f"{path}.{key}")
        elif isinstance(ours.get("additionalProperties"), dict):
            missing += _undeclared(sub, ours["additionalProperties"], f"{path}.{key}")
        elif not ours.get(PRESERVE):
            missing.append(f"{path}.{key}")
    if "items" in upstream and "items" in ours:
        missing += _undeclared(upstream["items"], ours["items"], f"{path}[]")
    if isinstance(upstream.get("additionalProperties"), dict) and "additionalProperties" in ours:
        missing += _undeclared(upstream["additionalProperties"], ours["additionalProperties"], f"{path}.*")
    return missing


@pytest.mark.parametrize("crd", _compat_crds())
def test_every_upstream_declared_field_is_accepted(crd: dict[str, Any]) -> None:
    info = KINDS[crd["spec"]["names"]["kind"]]
    upstream = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert _undeclared(upstream["spec"], model_schema(info.spec), "spec") == []
    assert _undeclared(upstream.get("status", {}), model_schema(info.status), "status") == []


def test_undeclared_check_finds_a_missing_field() -> None:
    ours = model_schema(ENVOY_PLUGIN.spec)
    del ours["properties"]["listener"]["items"]["properties"]["portName"]
    upstream = {"properties": {"listener": {"items": {"properties": {"portName": {"type": "string"}}}}}}
    assert _undeclared(upstream, ours, "spec") == ["spec.listener[].portName"]


@pytest.mark.parametrize("info", list(KINDS.values()), ids=list(KINDS))
def test_schema_generates(info: CrdInfo) -> None:
    spec, status = model_schema(info.spec), model_schema(info.status)
    assert spec["type"] == status["type"] == "object"
    assert {"observedGeneration", "conditions"} <= set(status["properties"])
    assert any(c["name"] == "Ready" for c in info.printer_columns)
