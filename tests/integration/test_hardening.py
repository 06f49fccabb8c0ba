"""Hostile and careless input against the operator on the real apiserver: no write outside a CR's
own objects, a status for every failure, one short log line for it (issue: hardening)."""

from __future__ import annotations

import copy
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.framework.kinds import ENVOY_FILTER
from slime.framework.kube import Kube
from slime.framework.names import InvalidNameError
from tests.integration.operator_proc import Operator, wait_until
from tests.integration.test_limiter_operator import (
    GROUP,
    PLURAL,
    VERSION,
    condition,
    create,
    make_service,
    smartlimiter,
)

VICTIM_SPEC = {"configPatches": [{"applyTo": "CLUSTER", "match": {"context": "SIDECAR_OUTBOUND"},
                                  "patch": {"operation": "MERGE", "value": {"connect_timeout": "2s"}}}]}


@pytest.fixture(scope="module")
def operator(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    tmp = tmp_path_factory.mktemp("hardening")
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "limiter", "kind": "limiter", "enable": True,
                                      "general": {"refresh": "1s", "disableAdaptive": True}}))
    op = Operator(kubeconfig, tmp / "op.log", None, modules="limiter", extra=["--config", str(config)]).wait_alive()
    yield op
    assert op.stop() == 0, op.output()[-3000:]


def envoyfilter(api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        obj: dict[str, Any] = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
            "networking.istio.io", "v1alpha3", ns, "envoyfilters", name)
        return obj
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def make_victim(api: k8s.ApiClient, ns: str, name: str) -> dict[str, Any]:
    """An EnvoyFilter someone else wrote."""
    body = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
            "metadata": {"name": name, "namespace": ns, "labels": {"owner": "someone-else"}}, "spec": VICTIM_SPEC}
    obj: dict[str, Any] = k8s.CustomObjectsApi(api).create_namespaced_custom_object(
        "networking.istio.io", "v1alpha3", ns, "envoyfilters", body)
    return obj


def untouched(api: k8s.ApiClient, victim: dict[str, Any]) -> bool:
    now = envoyfilter(api, victim["metadata"]["namespace"], victim["metadata"]["name"])
    return now is not None and now["metadata"]["resourceVersion"] == victim["metadata"]["resourceVersion"]


def not_ready(api: k8s.ApiClient, ns: str, name: str, reason: str) -> dict[str, Any] | None:
    ready = condition(api, ns, name, "Ready")
    return ready if ready and ready["status"] == "False" and ready["reason"] == reason else None


@pytest.fixture
def other_namespace(k8s_api: k8s.ApiClient) -> Iterator[str]:
    name = f"o-{uuid.uuid4().hex[:10]}"
    k8s.CoreV1Api(k8s_api).create_namespace({"metadata": {"name": name}})
    yield name
    k8s.CoreV1Api(k8s_api).delete_namespace(name)


def test_path_traversal_never_reaches_another_namespace(operator: Operator, k8s_api: k8s.ApiClient,
                                                        namespace: str, other_namespace: str) -> None:
    victim = make_victim(k8s_api, other_namespace, "victim.ratelimit")
    traversal = f"/../../../{other_namespace}/envoyfilters/victim"
    # A DestinationRule subset is not under our schema; a SmartLimiter set is, and is refused.
    k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", namespace, "destinationrules",
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "web"},
         "spec": {"host": "web", "subsets": [{"name": traversal, "labels": {"v": "1"}}]}})
    make_service(k8s_api, namespace, "web", {"app": "web"})
    bad = smartlimiter(namespace, "web", "true", "10")
    bad["spec"]["sets"][traversal] = copy.deepcopy(bad["spec"]["sets"]["_base"])
    with pytest.raises(ApiException) as refused:
        create(k8s_api, bad)
    assert refused.value.status == 422 and "a set is _base or a DestinationRule subset name" in str(refused.value.body)
    # The same name given to the client directly never becomes a request.
    kube = Kube(k8s_api)
    with pytest.raises(InvalidNameError):
        kube.apply({"apiVersion": ENVOY_FILTER.api_version, "kind": "EnvoyFilter",
                    "metadata": {"name": f"web.{namespace}.{traversal}.ratelimit", "namespace": namespace},
                    "spec": {}})
    with pytest.raises(InvalidNameError):
        kube.delete(ENVOY_FILTER, namespace, f"..%2f..%2f{other_namespace}")
    # The good limiter renders; the subset it does not name is ignored; the victim is untouched.
    create(k8s_api, smartlimiter(namespace, "web", "true", "10"))
    wait_until(lambda: envoyfilter(k8s_api, namespace, f"web.{namespace}.ratelimit"), 20, "the limiter's own filter")
    assert untouched(k8s_api, victim)


def test_an_object_of_someone_else_is_never_adopted_nor_deleted(operator: Operator, k8s_api: k8s.ApiClient,
                                                                namespace: str) -> None:
    victim = make_victim(k8s_api, namespace, f"shop.{namespace}.ratelimit")
    make_service(k8s_api, namespace, "shop", {"app": "shop"})
    create(k8s_api, smartlimiter(namespace, "shop", "true", "10"))
    ready = wait_until(lambda: not_ready(k8s_api, namespace, "shop", "NameConflict"), 20, "NameConflict")
    assert f"EnvoyFilter {namespace}/shop.{namespace}.ratelimit already exists" in ready["message"]
    assert untouched(k8s_api, victim)
    k8s.CustomObjectsApi(k8s_api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shop")
    time.sleep(2)
    assert untouched(k8s_api, victim)


def test_two_limiters_of_one_child_name_the_later_reports_the_other(operator: Operator, k8s_api: k8s.ApiClient,
                                                                    namespace: str) -> None:
    """`coll.<ns>` (_base) and `coll` (subset `<ns>`) both map to EnvoyFilter `coll.<ns>.<ns>.ratelimit`."""
    first = smartlimiter(namespace, f"coll.{namespace}", "true", "10")
    first["spec"]["workloadSelector"] = {"app": "coll"}
    create(k8s_api, first)
    child = f"coll.{namespace}.{namespace}.ratelimit"
    wait_until(lambda: envoyfilter(k8s_api, namespace, child), 20, "the first limiter's filter")
    written = envoyfilter(k8s_api, namespace, child)
    assert written is not None
    make_service(k8s_api, namespace, "coll", {"app": "coll"})
    k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(
        "networking.istio.io", "v1beta1", namespace, "destinationrules",
        {"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule", "metadata": {"name": "coll"},
         "spec": {"host": "coll", "subsets": [{"name": namespace, "labels": {"v": "2"}}]}})
    second = smartlimiter(namespace, "coll", "true", "20")
    second["spec"]["sets"][namespace] = copy.deepcopy(second["spec"]["sets"]["_base"])
    create(k8s_api, second)
    ready = wait_until(lambda: not_ready(k8s_api, namespace, "coll", "NameConflict"), 20, "NameConflict")
    assert f"SmartLimiter {namespace}/coll.{namespace}" in ready["message"]
    assert (condition(k8s_api, namespace, f"coll.{namespace}", "Ready") or {}).get("status") == "True"
    assert untouched(k8s_api, written)  # the first limiter's limit stays in force


def test_a_name_too_long_for_its_child_is_reported_and_nothing_written(operator: Operator, k8s_api: k8s.ApiClient,
                                                                       namespace: str) -> None:
    name = "l" * (253 - 2) + "ng"
    limiter = smartlimiter(namespace, name, "true", "10")
    limiter["spec"]["workloadSelector"] = {"app": "long"}
    create(k8s_api, limiter)
    ready = wait_until(lambda: not_ready(k8s_api, namespace, name, "InvalidName"), 20, "InvalidName")
    assert "characters long; at most 253" in ready["message"]
    assert k8s.CustomObjectsApi(k8s_api).list_namespaced_custom_object(
        "networking.istio.io", "v1alpha3", namespace, "envoyfilters")["items"] == []


def test_a_refused_write_ends_in_a_condition_with_backoff_and_short_log_lines(
        operator: Operator, k8s_api: k8s.ApiClient, kubeconfig: Path, namespace: str) -> None:
    policy = f"deny-envoyfilters-{namespace}"
    manifests = [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
             "apiGroups": ["networking.istio.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
             "resources": ["envoyfilters"]}]},
             "validations": [{"expression": "false", "message": "EnvoyFilters are frozen here"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {
                      "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}},
    ]
    subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "apply", "-f", "-"],
                   input=yaml.safe_dump_all(manifests), text=True, check=True, capture_output=True, timeout=60)
    def denied() -> bool:  # the policy takes a moment to be in force
        try:
            k8s.CustomObjectsApi(k8s_api).create_namespaced_custom_object(
                "networking.istio.io", "v1alpha3", namespace, "envoyfilters",
                {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": {"name": "probe"},
                 "spec": VICTIM_SPEC}, dry_run="All")
        except ApiException as e:
            return "frozen here" in str(e.body)
        return False

    try:
        wait_until(denied, 30, "the admission policy to be in force")
        make_service(k8s_api, namespace, "frozen", {"app": "frozen"})
        started = len(operator.output().splitlines())
        create(k8s_api, smartlimiter(namespace, "frozen", "true", "10"))
        ready = wait_until(lambda: (condition(k8s_api, namespace, "frozen", "Ready") or {}).get("status") == "False"
                           and condition(k8s_api, namespace, "frozen", "Ready"), 30, "Ready False")
        assert "EnvoyFilters are frozen here" in ready["message"], ready
        time.sleep(6)  # several refreshes (1s): retried with backoff, not every refresh
        lines = [ln for ln in operator.output().splitlines()[started:] if f"{namespace}/frozen" in ln]
        failures = [ln for ln in lines if "Failed to evaluate" in ln]
        assert 1 <= len(failures) <= 4, lines  # backoff 1, 2, 4 s: at most 3-4 attempts in ~7 s
        assert all(len(ln) < 1000 and "HTTP response headers" not in ln for ln in failures), failures
        events = k8s.CoreV1Api(k8s_api).list_namespaced_event(namespace,
                                                              field_selector="involvedObject.name=frozen").items
        assert any(e.type == "Warning" and "frozen here" in (e.message or "") for e in events)
    finally:
        for plural in ("validatingadmissionpolicybindings", "validatingadmissionpolicies"):
            subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "delete", plural, policy], check=False,
                           capture_output=True, timeout=60)


def test_conditions_name_every_problem(operator: Operator, k8s_api: k8s.ApiClient, namespace: str) -> None:
    make_service(k8s_api, namespace, "many", {"app": "many"})
    limiter = smartlimiter(namespace, "many", "true", "10")
    for i in range(15):
        limiter["spec"]["sets"][f"unknown-{i}"] = copy.deepcopy(limiter["spec"]["sets"]["_base"])
    create(k8s_api, limiter)
    ready = wait_until(lambda: not_ready(k8s_api, namespace, "many", "UnknownSet"), 20, "UnknownSet")
    named = [i for i in range(15) if f"spec.sets.unknown-{i}:" in ready["message"]]
    assert len(named) == 15 or (len(named) >= 5 and "more" in ready["message"]), ready["message"]
