"""Pieces of the plugin render, one table per rule (upstream's behaviour as the reference derives
it, checks D1-D14), plus the module's purity and config."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from slime.framework.config import default_module_config
from slime.framework.kinds import SECRET
from slime.framework.module import ObjectsView, Settings
from slime.framework.revision import rev_in_scope
from slime.modules.plugin import MODULE, envoytypes
from slime.modules.plugin.api import Listener
from slime.modules.plugin.checks import check_patch
from slime.modules.plugin.common import PluginContext, merge_patch
from slime.modules.plugin.config import PluginModule
from slime.modules.plugin.ecds import configuration_string, data_source
from slime.modules.plugin.envoyplugin import route_configuration_names
from slime.modules.plugin.render import render, translate

FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


def _pm(*plugins: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "PluginManager",
            "metadata": {"name": "p", "namespace": ns, "uid": "u"}, "spec": {"plugin": list(plugins)}}


def _ep(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha1", "kind": "EnvoyPlugin",
            "metadata": {"name": "e", "namespace": "default"}, "spec": spec}


@pytest.mark.parametrize(("listener", "names"), [
    ({"port": 0, "bind": "unix:///x"}, ["unix:///x"]),
    ({"port": 0}, []),
    ({"port": 9080, "sidecar": True, "hosts": ["a", ""]}, ["a:9080"]),
    ({"port": 9080, "sidecar": True}, ["9080"]),
    ({"port": 80, "portName": "generic-thrift-x", "bind": "1.1.1.1"}, ["generic.thrift.80.1.1.1.1"]),
    ({"port": 80, "portName": "generic"}, ["generic.generic.80"]),
    ({"port": 80, "portName": "http"}, ["http.80"]),
    ({"port": 80, "portName": "grpc"}, []),
    ({"port": 80, "portName": "grpc", "bind": "10.0.0.1"}, ["10.0.0.1"]),
])
def test_route_configuration_names(listener: dict[str, Any], names: list[str]) -> None:
    assert route_configuration_names(Listener.model_validate(listener)) == names


@pytest.mark.parametrize(("settings", "text"), [
    (None, "{}"),
    ({"_string": "abc"}, "abc"),
    ({"_string": "abc", "x": 1}, '{"_string":"abc","x":1}'),
    ({"b": 1.0, "a": [1.5, "é"]}, '{"a":[1.5,"é"],"b":1}'),
])
def test_wasm_configuration_string(settings: dict[str, Any] | None, text: str) -> None:
    assert configuration_string(settings) == text


@pytest.mark.parametrize(("url", "sha", "source"), [
    ("ghcr.io/x/y:v1", "", {"remote": {"httpUri": {"uri": "oci://ghcr.io/x/y:v1", "cluster": "_", "timeout": "30s"},
                                       "sha256": "nil"}}),
    ("host:5000/img", "", {"remote": {"httpUri": {"uri": "oci://host:5000/img", "cluster": "_", "timeout": "30s"},
                                      "sha256": "nil"}}),
    ("file:///a/b.wasm", "", {"local": {"filename": "/a/b.wasm"}}),
])
def test_data_source(url: str, sha: str, source: dict[str, Any]) -> None:
    problems: list[Any] = []
    assert data_source(url, sha, "w", problems)[0] == source and problems == []


@pytest.mark.parametrize("url", ["", "ftp://x/y", "oci://a b"])
def test_bad_url(url: str) -> None:
    reason = "InvalidUrl"
    problems: list[Any] = []
    assert data_source(url, "", "spec.plugin[0].wasm", problems)[0] is None
    assert [p.reason for p in problems] == [reason] and "spec.plugin[0].wasm.url" in problems[0].message


@pytest.mark.parametrize(("rev", "istio_rev", "strict", "in_scope"), [
    ("", "a,b", False, True), ("a", "a,b", False, True), ("b", " a , b ", False, True), ("c", "a,b", False, False),
    ("", "a,b", True, False), ("c", "", True, True),
])
def test_rev_scope(rev: str, istio_rev: str, strict: bool, in_scope: bool) -> None:
    assert rev_in_scope(rev, istio_rev, strict) is in_scope


def test_merge_patch_is_rfc7386() -> None:
    target = {"a": {"b": 1, "c": [1]}, "d": 1}
    assert merge_patch(target, {"a": {"b": None, "c": [2]}, "e": {"f": None}}) == {"a": {"c": [2]}, "d": 1, "e": {}}
    assert target == {"a": {"b": 1, "c": [1]}, "d": 1}  # not modified


def test_disabled_and_missing_enable_produce_nothing() -> None:
    ef, problems, in_force = translate(_pm({"name": "x", "type_url": FAULT, "inline": {}},
                                           {"name": "y", "enable": False}), PluginContext())
    assert ef is not None and ef["spec"] == {"workloadSelector": {}, "configPatches": []}
    assert problems == [] and in_force == []


def test_wildcard_is_per_plugin() -> None:
    spec = {"host": ["h"], "plugins": [
        {"name": "a", "enable": True, "type_url": FAULT, "inline": {}},
        {"name": "b", "enable": True, "listenerType": "Inbound", "type_url": FAULT, "inline": {}}]}
    ef, _, _ = translate(_ep(spec), PluginContext())
    assert ef is not None
    names = [p["match"]["routeConfiguration"]["vhost"]["name"] for p in ef["spec"]["configPatches"]]
    assert names == ["h:*", "h"]


def test_route_split_on_first_slash() -> None:
    spec = {"route": ["a.b/c/d", "r1"], "plugins": [{"name": "a", "enable": True, "type_url": FAULT, "inline": {}}]}
    ef, _, _ = translate(_ep(spec), PluginContext())
    assert ef is not None
    vhosts = [p["match"]["routeConfiguration"]["vhost"] for p in ef["spec"]["configPatches"]]
    assert vhosts == [{"name": "a.b:*", "route": {"name": "c/d"}}, {"route": {"name": "r1"}}]


@pytest.mark.parametrize(("value", "reason"), [
    ({"name": "x"}, "MissingTypeUrl"),
    ({"name": "x", "typed_config": {"@type": envoytypes.UDPA_TYPED_STRUCT, "type_url": ""}}, "MissingTypeUrl"),
    ({"name": "x", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                                    "type_url": "type.googleapis.com/no.Such"}}, "UnknownTypeUrl"),
    ({"name": "", "typed_config": {"@type": FAULT}}, "InvalidName"),
    ({"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
     "TerminalFilter"),
    ({"name": "x", "typed_config": {"@type": FAULT, "type_url": FAULT}}, "InvalidSettings"),
])
def test_filter_checks(value: dict[str, Any], reason: str) -> None:
    patch = {"applyTo": "HTTP_FILTER", "match": {}, "patch": {"operation": "INSERT_BEFORE", "value": value}}
    assert [p.reason for p in check_patch(patch, "spec.plugin[0]", frozenset())] == [reason]


def test_a_fine_filter_passes_and_declared_types_are_known() -> None:
    ts = {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "type.googleapis.com/my.Filter"}
    patch = {"applyTo": "HTTP_FILTER", "match": {"context": "GATEWAY"},
             "patch": {"operation": "INSERT_BEFORE", "value": {"name": "x", "typed_config": ts}}}
    assert [p.reason for p in check_patch(patch, "w", frozenset())] == ["UnknownTypeUrl"]
    assert check_patch(patch, "w", frozenset({"my.Filter"})) == []


@pytest.mark.parametrize("header", ["a\r\nb", "a\nb", "a\x00b"])
def test_header_text_with_line_breaks(header: str) -> None:
    value = {"typedPerFilterConfig": {"f": {"@type": FAULT, "headers": [{"name": header}]}}}
    patch = {"applyTo": "HTTP_ROUTE", "match": {}, "patch": {"operation": "MERGE", "value": value}}
    assert "InvalidHeader" in [p.reason for p in check_patch(patch, "w", frozenset())]


def test_lua_code_with_newlines_is_fine() -> None:
    lua = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
    value = {"name": "lua", "typed_config": {"@type": lua, "default_source_code": {"inline_string": "a\nb\n"}}}
    patch = {"applyTo": "HTTP_FILTER", "match": {}, "patch": {"operation": "INSERT_BEFORE", "value": value}}
    assert check_patch(patch, "w", frozenset()) == []


def test_secret_is_read_from_the_cr_namespace_only() -> None:
    cr = _pm({"name": "w", "enable": True, "wasm": {"url": "oci://r/i:v1", "imagePullSecretName": "s"}}, ns="a")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "b"},
              "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}
    settings = _settings()
    assert MODULE.context(cr, ObjectsView([cr, secret]), settings).secrets == {}
    secret["metadata"]["namespace"] = "a"
    ctx = MODULE.context(cr, ObjectsView([cr, secret]), settings)
    assert ctx.secrets == {"s": secret}
    [ef] = render(cr, ctx).objects or []
    vm = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["value"]["config"]["vmConfig"]
    assert vm["environmentVariables"]["keyValues"]["ISTIO_META_WASM_IMAGE_PULL_SECRET"] == "{}"


def _settings(**general: Any) -> Settings:
    cfg = default_module_config("plugin")
    return Settings(name="plugin", general=PluginModule.model_validate(general), globals=cfg.globals)


def test_module_declares_its_contract() -> None:
    assert MODULE.name == "plugin" and {k.kind for k in MODULE.kinds} == {"PluginManager", "EnvoyPlugin"}
    assert MODULE.reads == (SECRET,) and [k.kind for k in MODULE.writes] == ["EnvoyFilter"]
    assert MODULE.config is PluginModule


@pytest.mark.parametrize(("general", "field"), [
    ({"proxyVersion": "("}, "proxyVersion"),
    ({"proxyVresion": "x"}, "proxyVresion"),
    ({"configDiscoveryDefaultConfig": {"t/A": {"x": 1}}}, "configDiscoveryDefaultConfig"),
    ({"configDiscoveryDefaultConfig": {"t/A": {"@type": "t/B"}}}, "configDiscoveryDefaultConfig"),
])
def test_bad_module_config_names_the_field(general: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        PluginModule.model_validate(general)


def test_pure_files_import_no_client() -> None:
    code = ("import sys, slime.modules.plugin, slime.modules.plugin.render, slime.modules.plugin.context; "
            "print(sorted(m for m in ('kopf', 'kubernetes', 'prometheus_api_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
