"""The boot module's pure parts: values through the templates, least-privilege RBAC, names, the config
hash that rolls Pods, the hand-over of the global-sidecar to a lazyload config that has it, and the
bundle config ``slime run --config`` reads back."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from slime import registry
from slime.boot import MODULE
from slime.boot.config import DEFAULT_IMAGE, BootConfig, is_upstream_image
from slime.boot.render import BootContext, SafeLoader, render, tojson
from slime.framework.config import ConfigError, load_config_file
from slime.framework.module import ModuleInfo
from slime.framework.rbac import merge_rules, rules_for
from slime.render import Source, render_sources

NS = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mesh-operator"}}


def boot(spec: dict[str, Any], name: str = "sb", namespace: str = "mesh-operator") -> dict[str, Any]:
    return {"apiVersion": "config.netease.com/v1alpha1", "kind": "SlimeBoot",
            "metadata": {"name": name, "namespace": namespace, "uid": "u1"}, "spec": spec}


def ctx(catalog: dict[str, ModuleInfo] | None = None, **config: Any) -> BootContext:
    return BootContext(config=BootConfig(**config), catalog=catalog or registry.catalog(),
                       namespaces=("mesh-operator",))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_tojson_round_trips_any_string_through_yaml() -> None:
    rng = random.Random(7)
    alphabet = [chr(c) for c in (*range(0, 0x250), 0x2028, 0x2029, 0xFEFF, 0xFFFD, 0x1F600, 0x10FFFF)]
    samples = ["a: b\n---\nkind: Secret", "{{ x }}", "'\"\\", "\x85", "- [x]", "#", ": ", "é"]
    samples += ["".join(rng.choice(alphabet) for _ in range(40)) for _ in range(300)]
    for value in samples:
        text = f"k: {tojson(value)}\nother: 1\n"
        for loader in {yaml.SafeLoader, SafeLoader}:  # the pure-Python one, and the one the render uses
            assert yaml.load(text, Loader=loader) == {"k": value, "other": 1}, (loader, repr(value))  # noqa: S506


def test_a_hostile_string_stays_a_value() -> None:
    hostile = 'x"}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}'
    out = render(boot({"module": [{"name": "limiter", "kind": "limiter", "enable": True,
                                   "general": {"refresh": "5s"}, "global": {"istioRev": hostile}}],
                       "env": [{"name": "X", "value": hostile}]}), ctx())
    assert out.ready and out.ready.status_text == "True"
    assert out.objects is not None and not by_kind(out.objects, "Secret")
    [dep] = by_kind(out.objects, "Deployment")
    assert {"name": "X", "value": hostile} in dep["spec"]["template"]["spec"]["containers"][0]["env"]


def test_limiter_role_is_its_own_rules_and_grants_no_sidecar_write() -> None:
    out = render(boot({"module": [{"name": "limiter", "kind": "limiter", "enable": True}]}), ctx())
    assert out.objects is not None
    [role] = by_kind(out.objects, "ClusterRole")
    assert role["rules"] == rules_for([registry.get("limiter")])
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        if "networking.istio.io" in rule["apiGroups"] and "sidecars" in rule["resources"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}


def test_bundle_role_is_the_union_of_its_modules() -> None:
    spec = {"module": [{"name": "b", "enable": True, "bundle": {"modules": [{"name": "l", "kind": "limiter"},
                                                                            {"name": "p", "kind": "plugin"}]}},
                       {"name": "l", "kind": "limiter", "enable": True, "mode": "BundleItem"},
                       {"name": "p", "kind": "plugin", "enable": True, "mode": "BundleItem"}]}
    out = render(boot(spec), ctx())
    assert out.objects is not None
    [role] = by_kind(out.objects, "ClusterRole")
    assert role["rules"] == rules_for([registry.get("limiter"), registry.get("plugin")])


def test_merge_rules_is_a_set_union() -> None:
    a = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    b = [{"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["list", "get"]}]
    assert merge_rules(a + b) == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                                  {"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["get", "list"]}]


def test_cluster_scoped_names_differ_per_namespace_and_are_valid() -> None:
    names = []
    for ns in ("team-a", "team-b"):
        out = render(boot({"namespace": ns, "module": [{"name": "limiter", "kind": "limiter", "enable": True}]}),
                     BootContext(config=BootConfig(), catalog=registry.catalog(), namespaces=(ns,)))
        assert out.objects is not None
        names.append({o["metadata"]["name"] for o in out.objects if "namespace" not in o["metadata"]})
    assert names[0] and names[1] and not names[0] & names[1]
    long_ns, long_name = "n" * 63, "m" * 63
    out = render(boot({"namespace": long_ns, "module": [{"name": long_name, "kind": "plugin", "enable": True}]}),
                 BootContext(config=BootConfig(), catalog=registry.catalog(), namespaces=(long_ns,)))
    assert out.ready and out.ready.status_text == "True", out.ready


def test_a_config_change_changes_the_pod_template_hash_and_nothing_else_does() -> None:
    def pod_hash(spec: dict[str, Any]) -> str:
        out = render(boot(spec), ctx())
        assert out.objects is not None
        [dep] = by_kind(out.objects, "Deployment")
        return str(dep["spec"]["template"]["metadata"]["annotations"]["slime.io/config-hash"])

    base = {"module": [{"name": "limiter", "kind": "limiter", "enable": True, "general": {"refresh": "5s"}}]}
    changed = {"module": [{"name": "limiter", "kind": "limiter", "enable": True, "general": {"refresh": "9s"}}]}
    assert pod_hash(base) != pod_hash(changed)
    assert pod_hash(base) == pod_hash({**base, "replicaCount": 3})


@pytest.mark.parametrize(("spec", "reason", "field"), [
    ({"module": [{"name": "x", "kind": "boot", "enable": True}]}, "UnknownModule", "spec.module[0].kind"),
    ({"module": [{"name": "Bad_Name", "kind": "plugin", "enable": True}]}, "InvalidSpec", "spec.module[0].name"),
    ({"module": [{"name": "p", "kind": "plugin", "enable": True, "general": {"x": 1}}]}, "InvalidModuleConfig",
     "spec.module[0].general.x"),
    ({"namespace": "Not_A_Namespace", "module": []}, "InvalidSpec", "spec.namespace"),
    ({"module": [{"name": "p", "kind": "plugin", "enable": True, "globalSidecarMode": "namespace"}]}, "InvalidSpec",
     "spec.module[0].globalSidecarMode"),
    ({"module": [{"name": "p", "kind": "plugin", "enable": True}], "service": {"port": 8081}}, "InvalidSpec",
     "spec.service"),
    ({"module": [{"name": "p", "kind": "plugin", "enable": True}], "service": {"auxiliaryPort": 9090}},
     "InvalidSpec", "spec.service"),
])
def test_bad_input_names_the_field_and_writes_nothing(spec: dict[str, Any], reason: str, field: str) -> None:
    out = render(boot(spec), ctx())
    assert out.objects is None
    assert out.ready is not None and out.ready.status_text == "False" and out.ready.reason == reason
    assert field in out.ready.message


class LazyWithSidecar(BaseModel):
    """A lazyload config that renders the global-sidecar itself (as the lazyload branch's does)."""

    model_config = ConfigDict(extra="forbid")
    wormholePort: list[str] = []
    globalSidecar: dict[str, Any] = {}


def test_global_sidecar_goes_into_a_lazyload_config_that_has_it() -> None:
    catalog = dict(registry.catalog())
    lazy = catalog["lazyload"]
    catalog["lazyload"] = ModuleInfo(lazy.name, lazy.rules, lazy.kinds, LazyWithSidecar)
    spec = {"module": [{"name": "lazyload", "kind": "lazyload", "enable": True, "general": {"wormholePort": ["9080"]}}],
            "component": {"globalSidecar": {"enable": True, "port": 8080, "replicas": 2,
                                            "image": {"repository": "docker.io/slimeio/slime-global-sidecar",
                                                      "tag": "v0.9.0"},
                                            "sidecarInject": {"enable": True, "mode": "pod"}}}}
    out = render(boot(spec), ctx(catalog))
    assert out.objects is not None
    assert not [o for o in out.objects if o["metadata"]["name"] == "global-sidecar"]
    [cm] = by_kind(out.objects, "ConfigMap")
    cfg = json.loads(cm["data"]["cfg"])
    assert cfg["general"]["globalSidecar"] == {"enable": True, "image": BootConfig().envoyImage, "port": 8080,
                                               "replicas": 2, "sidecarInject": {"enable": True, "mode": "pod"}}


def test_global_sidecar_is_ignored_with_a_note_by_a_lazyload_config_without_it() -> None:
    catalog = dict(registry.catalog())
    lazy = catalog["lazyload"]
    catalog["lazyload"] = ModuleInfo(lazy.name, lazy.rules, lazy.kinds, None)
    spec = {"module": [{"name": "lazyload", "kind": "lazyload", "enable": True}],
            "component": {"globalSidecar": {"enable": True}}}
    out = render(boot(spec), ctx(catalog))
    assert out.objects is not None and not [o for o in out.objects if o["metadata"]["name"] == "global-sidecar"]
    assert any("globalSidecar: ignored" in n for n in out.status["notes"])


def test_bundle_config_is_what_slime_run_reads(tmp_path: Path) -> None:
    spec = {"module": [{"name": "bundle", "enable": True, "global": {"misc": {"seLabelSelectorKeys": "app"}},
                        "bundle": {"modules": [{"name": "limiter", "kind": "limiter"}, {"name": "plugin",
                                                                                         "kind": "plugin"}]}},
                       {"name": "limiter", "kind": "limiter", "enable": True, "mode": "BundleItem",
                        "general": {"refresh": "7s"}, "global": {"istioRev": "canary"}},
                       {"name": "plugin", "kind": "plugin", "enable": False, "mode": "BundleItem"}]}
    out = render(boot(spec), ctx())
    assert out.objects is not None
    [cm] = by_kind(out.objects, "ConfigMap")
    for key, text in cm["data"].items():  # as the ConfigMap volume lays it out
        (tmp_path / key).write_text(text)
    configs = {c.kind: c for c in load_config_file(tmp_path / "cfg")}
    assert configs["limiter"].enable and configs["limiter"].general == {"refresh": "7s"}
    assert configs["limiter"].globals.istioRev == "canary"
    assert configs["limiter"].globals.slimeNamespace == "mesh-operator"
    assert not configs["plugin"].enable
    [dep] = by_kind(out.objects, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--modules") + 1] == "limiter,plugin"
    (tmp_path / "cfg_plugin").unlink()
    with pytest.raises(ConfigError, match="cfg_plugin"):
        load_config_file(tmp_path / "cfg")


def test_upstream_images_are_recognised() -> None:
    assert is_upstream_image("docker.io/slimeio/slime-lazyload")
    assert is_upstream_image("slimeio/slime-bundle-all")
    assert not is_upstream_image("registry.example/slime")
    assert not is_upstream_image("example/slimeio/slimer")


def test_default_image_is_this_version() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    version = next(line.split('"')[1] for line in pyproject.splitlines() if line.startswith("version"))
    assert DEFAULT_IMAGE == f"slime:{version}"


def test_every_written_kind_is_declared_and_the_operator_role_can_grant_each_module_role() -> None:
    """Kubernetes lets the boot operator create a role only with permissions it holds itself."""
    assert {k.kind for k in MODULE.writes} >= {"Deployment", "ClusterRole", "ClusterRoleBinding", "ConfigMap"}
    held = {(g, r, v) for rule in rules_for(registry.builtin()) for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}
    for module in registry.builtin():
        wanted = {(g, r, v) for rule in rules_for([module]) for g in rule["apiGroups"]
                  for r in rule["resources"] for v in rule["verbs"]}
        assert wanted <= held, module.name


def test_render_goes_through_slime_render() -> None:
    out = render_sources([Source(NS, "f"), Source(boot({"module": [{"name": "plugin", "kind": "plugin",
                                                                     "enable": True}]}), "f")], [], {})
    assert out.errors == []
    assert {o["kind"] for o in out.objects} == {"ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding",
                                                "ConfigMap", "Deployment", "Service", "ServiceAccount"}


def test_a_template_error_is_a_condition(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import jinja2

    render_module = importlib.import_module("slime.boot.render")  # the package exports a function of that name

    env = jinja2.Environment(loader=jinja2.DictLoader({
        **{f"{t}.yaml.j2": "" for t in render_module.MODULE_TEMPLATES},
        "deployment.yaml.j2": "kind: Deployment\nmetadata: {name: {{ m.no_such_value|tojson }}}\n"}),
        undefined=jinja2.StrictUndefined)
    env.filters["tojson"] = tojson
    monkeypatch.setattr(render_module, "ENV", env)
    out = render(boot({"module": [{"name": "plugin", "kind": "plugin", "enable": True}]}), ctx())
    assert out.objects is None
    assert out.ready is not None and out.ready.reason == "TemplateError" and "no_such_value" in out.ready.message
