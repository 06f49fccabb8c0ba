"""A module as a SlimeBoot deploys it, run as its Pod would run it but as a local process (no node
here): the command and arguments of the rendered Deployment, its ConfigMap as the config directory,
the token of its ServiceAccount bound to its rendered ClusterRole. A bundle (limiter + plugin) reads
its items from ``cfg_<item>``, does its job with exactly that RBAC, and when one verb is taken away
reports the denial in the SmartLimiter's status instead of crashing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from slime.framework import kinds
from slime.framework.kube import Kube
from slime.render import Source, render_sources
from tests.integration.operator_proc import free_port, wait_until
from tests.integration.test_boot_helm import sa_kubeconfig

SL = ("microservice.slime.io", "v1alpha2", "smartlimiters")


def bundle(namespace: str) -> dict[str, Any]:
    return {"apiVersion": "config.netease.com/v1alpha1", "kind": "SlimeBoot",
            "metadata": {"name": "sb", "namespace": namespace, "uid": "not-applied"},
            "spec": {"namespace": namespace, "module": [
                {"name": "bundle", "enable": True,
                 "bundle": {"modules": [{"name": "limiter", "kind": "limiter"}, {"name": "plugin", "kind": "plugin"}]}},
                {"name": "limiter", "kind": "limiter", "enable": True, "mode": "BundleItem",
                 "general": {"refresh": "5s", "disableGlobalRateLimit": True,  # its RLS ConfigMap: here
                             "rlsConfigMap": {"name": "rate-limit-config", "namespace": namespace}}},
                {"name": "plugin", "kind": "plugin", "enable": True, "mode": "BundleItem"}]}}


def limiter(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "microservice.slime.io/v1alpha2", "kind": "SmartLimiter",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"sets": {"_base": {"descriptor": [{"action": {"fill_interval": {"seconds": 1}, "quota": "5"},
                                                        "condition": "true", "target": {"port": 80}}]}}}}


def ready(api: k8s.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    obj = api.get_namespaced_custom_object(*SL[:2], namespace, SL[2], name)
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Ready"), None)


def test_deployed_bundle_works_with_its_own_rbac(kubeconfig: Path, k8s_api: k8s.ApiClient, namespace: str,
                                                 tmp_path: Path) -> None:
    out = render_sources([Source(bundle(namespace), "sb")], [], {})
    assert out.errors == []
    kube = Kube(k8s_api)
    for obj in out.objects:  # what the boot operator writes (its own tests show it does)
        kube.apply(obj)
    [cm] = [o for o in out.objects if o["kind"] == "ConfigMap"]
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for key, text in cm["data"].items():  # as the ConfigMap volume lays it out
        (config_dir / key).write_text(text)
    [dep] = [o for o in out.objects if o["kind"] == "Deployment"]
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["slime"]
    args = list(container["args"])
    liveness, metrics = free_port(), free_port()
    replace = {"--config": str(config_dir / "cfg"), "--liveness": f"http://127.0.0.1:{liveness}/healthz",
               "--metrics-addr": f"127.0.0.1:{metrics}"}
    for flag, value in replace.items():
        args[args.index(flag) + 1] = value
    sa = sa_kubeconfig(kubeconfig, namespace, "bundle", tmp_path / "sa.kubeconfig")
    log = (tmp_path / "bundle.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "slime.cli", *args, "--kubeconfig", str(sa)], stdout=log,
                            stderr=subprocess.STDOUT)
    api = k8s.CustomObjectsApi(k8s_api)
    try:
        k8s.CoreV1Api(k8s_api).create_namespaced_service(namespace, {
            "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        api.create_namespaced_custom_object(*SL[:2], namespace, SL[2], limiter(namespace, "web"))
        cond = wait_until(lambda: ready(api, namespace, "web"), 60, f"Ready (log: {tmp_path / 'bundle.log'})")
        assert cond["status"] == "True", cond
        assert kube.get(kinds.ENVOY_FILTER, namespace, f"web.{namespace}.ratelimit") is not None
        text = (tmp_path / "bundle.log").read_text()
        assert "Registered module limiter" in text and "Registered module plugin" in text
        assert "forbidden" not in text.lower(), text[-3000:]

        # One verb less: the limiter may no longer create EnvoyFilters. It says so; it does not crash.
        [role] = [o for o in out.objects if o["kind"] == "ClusterRole"]
        for rule in role["rules"]:
            if "envoyfilters" in rule["resources"]:
                rule["verbs"] = [v for v in rule["verbs"] if v not in ("create", "patch")]
        kube.apply(role)
        k8s.CoreV1Api(k8s_api).create_namespaced_service(namespace, {
            "metadata": {"name": "web2"}, "spec": {"selector": {"app": "web2"}, "ports": [{"port": 80}]}})
        api.create_namespaced_custom_object(*SL[:2], namespace, SL[2], limiter(namespace, "web2"))
        cond = wait_until(lambda: (c := ready(api, namespace, "web2")) and c["status"] == "False" and c, 60,
                          "the denial in the status")
        assert "forbidden" in (cond["message"] + cond["reason"]).lower(), cond
        print("denial:", cond)
        assert proc.poll() is None, "the module process died"
        assert kube.get(kinds.ENVOY_FILTER, namespace, f"web2.{namespace}.ratelimit") is None
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        for name in ("web", "web2"):  # gone before the namespace is: no later operator of the session sees them
            try:
                api.delete_namespaced_custom_object(*SL[:2], namespace, SL[2], name)
            except ApiException as e:
                if e.status != 404:
                    raise
        wait_until(lambda: not api.list_namespaced_custom_object(*SL[:2], namespace, SL[2])["items"], 30,
                   "the SmartLimiters deleted")
        for obj in out.objects:
            if "namespace" not in obj["metadata"]:
                kube.delete(kinds.of(obj), None, obj["metadata"]["name"])
        print(yaml.safe_dump({"log tail": (tmp_path / "bundle.log").read_text()[-1500:]}))
