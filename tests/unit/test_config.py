"""Module configuration: upstream's shapes, defaults, bundle merging and errors."""

from __future__ import annotations

import json

import pytest
import yaml

from slime.framework.config import (
    DEFAULT_MISC,
    ConfigError,
    GlobalConfig,
    ModuleConfig,
    default_module_config,
    load_module_configs,
)
from tests.compat import COMPAT, require_compat

LIMITER = """
name: limiter
kind: limiter
enable: true
general: {disableGlobalRateLimit: true}
global:
  istioRev: canary
  misc: {enableLeaderElection: "on"}
"""


def test_single_yaml_document_gets_upstream_defaults() -> None:
    [cfg] = load_module_configs(LIMITER)
    assert (cfg.name, cfg.kind, cfg.enable) == ("limiter", "limiter", True)
    assert cfg.general == {"disableGlobalRateLimit": True}
    g = cfg.global_
    assert g is not None
    assert (g.istioRev, g.service, g.istioNamespace, g.slimeNamespace) == (
        "canary",
        "app",
        "istio-system",
        "mesh-operator",
    )
    assert g.misc == {**DEFAULT_MISC, "enableLeaderElection": "on"}
    assert g.log is not None and (g.log.logLevel, g.log.klogLevel) == ("info", 5)
    assert g.log.logRotateConfig is None  # rotation defaults only when rotating


def test_json_text_and_mapping_inputs() -> None:
    doc = yaml.safe_load(LIMITER)
    assert load_module_configs(json.dumps(doc)) == load_module_configs(doc) == load_module_configs(LIMITER)


def test_list_and_multi_document_forms_are_equal() -> None:
    plugin = {"name": "plugin", "kind": "plugin", "enable": True, "general": {"proxyVersion": "^1\\.19.*"}}
    lazy = {"name": "lazyload", "enable": False}
    as_list = yaml.safe_dump([plugin, lazy])
    as_docs = yaml.safe_dump_all([plugin, lazy])
    configs = load_module_configs(as_list)
    assert configs == load_module_configs(as_docs) == load_module_configs([plugin, lazy])
    assert [(c.name, c.kind, c.enable) for c in configs] == [
        ("plugin", "plugin", True),
        ("lazyload", "lazyload", False),
    ]
    assert [c.name for c in load_module_configs(as_list, enabled_only=True)] == ["plugin"]


def test_name_is_the_kind_when_kind_is_empty_and_vice_versa() -> None:
    [a, b] = load_module_configs([{"name": "lazyload", "enable": True}, {"kind": "plugin", "enable": True}])
    assert (a.name, a.kind, a.effective_kind) == ("lazyload", "lazyload", "lazyload")
    assert (b.name, b.kind) == ("plugin", "plugin")


def test_enable_defaults_to_false_as_upstream() -> None:
    [cfg] = load_module_configs("name: plugin\nkind: plugin\n")
    assert cfg.enable is False
    assert load_module_configs("name: plugin\n", enabled_only=True) == []


def test_empty_source() -> None:
    assert load_module_configs("") == []
    assert load_module_configs([]) == []


def test_log_rotate_defaults_are_filled_per_field() -> None:
    [cfg] = load_module_configs(
        {"name": "lazyload", "global": {"log": {"logRotate": True, "logRotateConfig": {"maxSizeMB": 7}}}}
    )
    assert cfg.global_ is not None and cfg.global_.log is not None
    rotate = cfg.global_.log.logRotateConfig
    assert rotate is not None
    assert (rotate.filePath, rotate.maxSizeMB, rotate.maxBackups, rotate.maxAgeDay) == (
        "/tmp/log/slime.log",
        7,
        10,
        10,
    )


def test_explicit_values_are_kept() -> None:
    g = GlobalConfig(service="svc", istioNamespace="istio", slimeNamespace="slime").with_defaults()
    assert (g.service, g.istioNamespace, g.slimeNamespace) == ("svc", "istio", "slime")


def test_default_module_config() -> None:
    cfg = default_module_config("lazyload")
    assert (cfg.name, cfg.kind, cfg.enable, cfg.general) == ("lazyload", "lazyload", True, {})
    assert cfg.global_ == GlobalConfig().with_defaults()
    assert cfg.globals == cfg.global_
    assert ModuleConfig(name="x").globals == GlobalConfig().with_defaults()


BUNDLE = """
- name: bundle
  enable: true
  bundle:
    modules:
      - {name: limiter, kind: limiter}
      - {name: pm, kind: plugin}
  global:
    istioRev: a
    strictRev: true
    log: {logLevel: debug}
    misc: {enableLeaderElection: "on", aux-addr: ":9999"}
    configSources: [{address: "ss://"}]
- name: limiter
  kind: limiter
  mode: BundleItem
  enable: true
  general: {disableAdaptive: true}
  global:
    istioRev: b
    misc: {aux-addr: ":7777", extra: "x"}
    configSources: [{address: "k8s://"}]
    log: {klogLevel: 3}
- name: pm
  mode: BundleItem
  enable: true
- name: lazyload
  kind: lazyload
  enable: false
"""


def test_bundle_items_inherit_and_merge_the_bundle_global() -> None:
    configs = load_module_configs(BUNDLE)
    by_name = {c.name: c for c in configs}
    assert list(by_name) == ["lazyload", "limiter", "pm"]  # standalone entries first, then bundle items
    limiter, pm = by_name["limiter"].global_, by_name["pm"].global_
    assert limiter is not None and pm is not None
    # scalars the item sets win; the rest come from the bundle
    assert (limiter.istioRev, limiter.strictRev) == ("b", True)
    assert limiter.log is not None and (limiter.log.logLevel, limiter.log.klogLevel) == ("debug", 3)
    # maps are merged, lists appended
    assert limiter.misc == {**DEFAULT_MISC, "enableLeaderElection": "on", "aux-addr": ":7777", "extra": "x"}
    assert [s.address for s in limiter.configSources] == ["ss://", "k8s://"]
    # an item without global gets the bundle's, with defaults
    assert (pm.istioRev, pm.strictRev, pm.service) == ("a", True, "app")
    assert pm.misc["aux-addr"] == ":9999"
    # the kind comes from the bundle's list when the item has none
    assert by_name["pm"].kind == "plugin"
    assert by_name["limiter"].general == {"disableAdaptive": True}
    assert [c.name for c in load_module_configs(BUNDLE, enabled_only=True)] == ["limiter", "pm"]


def test_disabled_bundle_item_is_returned_disabled() -> None:
    docs = yaml.safe_load(BUNDLE)
    docs[2]["enable"] = False
    configs = load_module_configs(docs)
    assert {c.name: c.enable for c in configs} == {"lazyload": False, "limiter": True, "pm": False}


def test_upstream_slimeboot_module_lists_load() -> None:
    # The module lists of upstream's SlimeBoot samples are valid config files.
    require_compat()
    path = COMPAT / "lazyload/install/samples/lazyload/slimeboot_cluster_prometheus.yaml"
    [boot] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    [cfg] = load_module_configs(boot["spec"]["module"])
    assert (cfg.kind, cfg.enable, cfg.general["metricSourceType"]) == ("lazyload", True, "prometheus")
    assert cfg.metric is not None and cfg.metric.prometheus is not None
    assert cfg.metric.prometheus.handlers["destination"].type == "Group"  # written as 1 upstream


ERRORS = [
    ("name: x\nglobal: {log: {klogLevel: loud}}", "module 'x': global.log.klogLevel"),
    ("name: x\nglobal: {misc: {enableLeaderElection: on}}", "module 'x': global.misc.enableLeaderElection"),
    ("name: x\ngenral: {}", "module 'x': genral: unknown field"),
    ("kind: limiter\nmode: bundle", "module 'limiter': mode"),
    ("- name: a\n- 3", "module #1: expected a mapping"),
    ("name: [a", "not valid YAML or JSON"),
    ("enable: true", "module #0: set name or kind"),
    ("- {name: a, kind: limiter}\n- {name: b, kind: limiter}", "module kind 'limiter' is configured twice"),
    ("- {name: a}\n- {name: a}", "module 'a' is configured twice"),
    (
        "- {name: b, bundle: {modules: [{name: a}]}}",
        "bundle 'b' lists module 'a', which has no BundleItem config",
    ),
    ("- {name: a, mode: BundleItem}", "module 'a' has mode BundleItem but no bundle lists it"),
    (
        "- {name: b, bundle: {modules: []}}\n- {name: c, bundle: {modules: []}}",
        "only one bundle is supported",
    ),
    (
        "- {name: b, bundle: {modules: [{name: a}]}}\n"
        "- {name: a, mode: BundleItem, global: {log: {klogLevel: x}}}",
        "module 'a': global.log.klogLevel",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS, ids=[m for _, m in ERRORS])
def test_errors_name_the_module_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_module_configs(text)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)
