"""Upstream Slime's SlimeBoot samples (read from ../shared, not copied) through ``slime render``'s path:
each becomes the module Deployment upstream's chart made, running slime's image, with its entry as
``cfg``, the module's own RBAC, and the global-sidecar when asked; the sample whose field upstream
silently dropped is refused naming it. Upstream's install CRDs are recognised as foreign."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from slime import registry
from slime.boot.config import DEFAULT_ENVOY_IMAGE, DEFAULT_IMAGE, is_upstream_image
from slime.boot.context import crd_verdict
from slime.framework.rbac import rules_for
from slime.render import Source, render_sources
from tests.compat import COMPAT, REJECTED, compat_objects, documents, require_compat

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def samples() -> list[tuple[str, dict[str, Any]]]:
    return list(compat_objects({"SlimeBoot"})) if COMPAT.is_dir() else []


def case_id(case: str) -> str:
    return case.rsplit("/", 1)[-1]


def test_there_are_upstream_samples() -> None:
    require_compat()
    assert len(samples()) >= 6


@pytest.mark.parametrize(("case", "sample"), samples(), ids=[c for c, _ in samples()])
def test_upstream_sample(case: str, sample: dict[str, Any]) -> None:
    require_compat()
    namespace = (sample.get("spec") or {}).get("namespace", "mesh-operator")
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    if "apiVersion" not in sample:  # limiter/install/limiter.yaml: kubectl refuses it too
        out = render_sources([Source(ns, "ns"), Source(sample, case)], [], {})
        assert out.errors == [f"{case}: SlimeBoot {sample['metadata']['namespace']}/{sample['metadata']['name']}: "
                              "apiVersion: missing (expected config.netease.com/v1alpha1)"]
        sample = {"apiVersion": "config.netease.com/v1alpha1", **sample}  # as its user fixes it
    out = render_sources([Source(ns, "ns"), Source(sample, case)], [], {})
    [status] = [s["status"] for s in out.statuses]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    rejected = REJECTED.get(case_id(case))
    if rejected is not None:
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert f"{rejected}: unknown field" in ready["message"]
        assert out.objects == []
        return
    entries = [e for e in sample["spec"]["module"] if e.get("enable") and e.get("mode") != "BundleItem"]
    wants_sidecar = ((sample["spec"].get("component") or {}).get("globalSidecar") or {}).get("enable")
    lazyload = registry.catalog()["lazyload"].config
    handed_over = bool(wants_sidecar and lazyload is not None and "globalSidecar" in lazyload.model_fields)
    refused = []
    for i, entry in enumerate(sample["spec"]["module"]):
        model = registry.catalog()[entry.get("kind") or entry["name"]].config
        try:
            if model is not None:
                model.model_validate(entry.get("general") or {})
        except ValidationError:
            refused.append(f"spec.module[{i}].general")
    if refused:  # that module's config model does not take upstream's settings (yet)
        assert ready["status"] == "False" and ready["reason"] == "InvalidModuleConfig", ready
        assert all(field in ready["message"] for field in refused)
        return
    assert ready["status"] == "True", ready
    for entry in entries:
        name = entry["name"]
        deployment = next(o for o in out.objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name)
        assert deployment["metadata"]["namespace"] == namespace
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        image = sample["spec"]["image"]
        if is_upstream_image(image["repository"]):  # upstream's Go image replaced, and said so
            assert container["image"] == DEFAULT_IMAGE
            assert any("upstream's Go build" in n for n in status["notes"])
        else:  # someone's own image: theirs to make slime's
            assert container["image"] == f"{image['repository']}:{image['tag']}"
        [cm] = [o for o in out.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name]
        cfg = json.loads(cm["data"]["cfg"])
        for section in {"fence", "limiter", "plugin"} & set(entry):  # upstream's old format: ignored, said so
            assert any(f".{section}: a section of upstream's old config format" in n for n in status["notes"])
            entry = {k: v for k, v in entry.items() if k != section}
        if handed_over and (entry.get("kind") or name) == "lazyload":  # checked below
            cfg["general"].pop("globalSidecar")
        cfg["global"] = {k: v for k, v in cfg["global"].items()
                         if k not in ("slimeNamespace", "istioNamespace") or k in (entry.get("global") or {})}
        assert {k: v for k, v in cfg.items() if v != {}} == {k: v for k, v in entry.items() if v != {}}
        [role] = [o for o in out.objects if o["kind"] == "ClusterRole"]
        assert role["metadata"]["name"] == f"slime.{namespace}.{name}"
        assert role["rules"] == rules_for([registry.get(entry.get("kind") or name)])
    assert [o for o in out.objects if o["metadata"]["name"] == "global-sidecar"] == []  # the module's to deploy
    if handed_over:
        [cm] = [o for o in out.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "lazyload"]
        section = json.loads(cm["data"]["cfg"])["general"]["globalSidecar"]
        image = sample["spec"]["component"]["globalSidecar"]["image"]
        assert section["enable"] is True and section["image"] == (
            DEFAULT_ENVOY_IMAGE if is_upstream_image(image["repository"]) else f"{image['repository']}:{image['tag']}")


@pytest.mark.parametrize("name", ["slimeboots-v1.yaml", "crds-v1.yaml"])
def test_upstream_install_crd_is_foreign(name: str) -> None:
    require_compat()
    [crd] = [d for d in documents(COMPAT / "install" / "init" / name)
             if d.get("metadata", {}).get("name") == "slimeboots.config.netease.com"]
    verdict = crd_verdict(crd)
    assert verdict is not None and verdict[0] is False


def test_our_crd_is_ours() -> None:
    crd = yaml.safe_load((REPO / "crds" / "slimeboots.config.netease.com.yaml").read_text())
    assert crd_verdict(crd) == (True, "slimeboots.config.netease.com is slime's")
