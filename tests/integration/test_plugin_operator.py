"""The plugin module in `slime run` on the real apiserver: a PluginManager's EnvoyFilter follows its
apply, update (a plugin disabled) and delete (garbage-collected); Istio's real CRD schema accepts
every EnvoyFilter it writes; an invalid CR is reported and the others are unaffected."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.operator_proc import Operator, wait_until

REPO = Path(__file__).resolve().parents[2]
GROUP, VERSION = "microservice.slime.io", "v1alpha1"


@pytest.fixture(scope="module")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    tmp = tmp_path_factory.mktemp("plugin")
    op = Operator(kubeconfig, tmp / "op.log", None, modules="plugin").wait_alive()
    yield op
    assert op.stop() == 0, op.output()[-3000:]


def sample(namespace: str) -> dict[str, Any]:
    doc = next(d for d in yaml.safe_load_all((REPO / "samples/plugin/lua-and-rbac.yaml").read_text())
               if d and d["kind"] == "PluginManager")
    doc["metadata"]["namespace"] = namespace
    return doc


def envoyfilter(api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", ns, "envoyfilters", name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def ready(api: k8s.ApiClient, ns: str, name: str, plural: str = "pluginmanagers") -> dict[str, Any] | None:
    obj = k8s.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)


def filter_names(ef: dict[str, Any] | None) -> list[str]:
    return [p["patch"]["value"]["name"] for p in (ef or {}).get("spec", {}).get("configPatches", [])
            if p["applyTo"] == "HTTP_FILTER"]


def test_apply_update_delete(operator: Operator, k8s_api: k8s.ApiClient, namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    pm = sample(namespace)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "pluginmanagers", pm)
    wait_until(lambda: filter_names(envoyfilter(k8s_api, namespace, "reviews-filters"))
               == ["envoy.filters.http.lua", "envoy.filters.http.rbac"], 20, "the EnvoyFilter with both filters")
    ef = envoyfilter(k8s_api, namespace, "reviews-filters")
    assert ef is not None and ef["metadata"]["ownerReferences"][0]["kind"] == "PluginManager"
    assert (wait_until(lambda: ready(k8s_api, namespace, "reviews-filters"), 20, "Ready") or {})["status"] == "True"
    # disable the RBAC plugin: it leaves the EnvoyFilter
    plugins = copy.deepcopy(pm["spec"]["plugin"])
    plugins[1]["enable"] = False
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, "pluginmanagers", "reviews-filters",
                                       {"spec": {"plugin": plugins}})
    wait_until(lambda: filter_names(envoyfilter(k8s_api, namespace, "reviews-filters"))
               == ["envoy.filters.http.lua"], 20, "the RBAC filter gone")
    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, "pluginmanagers", "reviews-filters")
    wait_until(lambda: envoyfilter(k8s_api, namespace, "reviews-filters") is None, 60, "garbage collection")
    # a watch event is not worth a log line (kopf would write "Handler ... succeeded." for each),
    # nor is a new object that is fine: the log has the writes
    out = operator.output()
    assert "Handler '" not in out and "is Ready" not in out, out[-3000:]
    assert "Applied EnvoyFilter" in out, out[-3000:]


def test_an_invalid_cr_is_reported_and_the_others_are_unaffected(operator: Operator, k8s_api: k8s.ApiClient,
                                                                 namespace: str) -> None:
    api = k8s.CustomObjectsApi(k8s_api)
    good = sample(namespace)
    bad = sample(namespace)
    bad["metadata"]["name"] = "unknown-type"
    bad["spec"]["plugin"][0]["type_url"] = "type.googleapis.com/envoy.extensions.filters.http.nonexistent.v3.Nope"
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "pluginmanagers", bad)
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, "pluginmanagers", good)
    cond = wait_until(lambda: ready(k8s_api, namespace, "unknown-type"), 20, "the bad one's Ready")
    assert cond["status"] == "False" and cond["reason"] == "UnknownTypeUrl", cond
    assert "nonexistent" in cond["message"]
    wait_until(lambda: envoyfilter(k8s_api, namespace, "reviews-filters"), 20, "the good one's EnvoyFilter")
    assert envoyfilter(k8s_api, namespace, "unknown-type") is None  # nothing Envoy would reject is written


def test_every_plugin_golden_is_accepted_by_istios_crd_schema(operator: Operator, k8s_api: k8s.ApiClient,
                                                              namespace: str) -> None:
    """Server-side dry runs of every EnvoyFilter the plugin goldens hold, against Istio's real CRD."""
    api = k8s.CustomObjectsApi(k8s_api)
    checked = 0
    for path in sorted((REPO / "tests/golden/plugin").glob("*.out.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "EnvoyFilter":
                continue
            obj = copy.deepcopy(doc)
            obj["metadata"] = {"name": obj["metadata"]["name"], "namespace": namespace}
            api.create_namespaced_custom_object("networking.istio.io", "v1alpha3", namespace, "envoyfilters", obj,
                                                dry_run="All")
            checked += 1
    assert checked >= 40
