"""Module configuration in upstream's shape (proto ``slime.config.v1alpha1.Config``).

One config per module: ``name``, ``kind``, ``enable``, ``mode``, ``bundle``, ``general``
(module-specific, validated by the module), ``global`` and ``metric``. The same object is
a SlimeBoot's ``spec.module[]`` entry and the file given to ``slime run --config``.

``load_module_configs`` accepts one document, a list of documents, or upstream's bundle
form, and returns each module's effective config (bundle global merged in, defaults filled).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from slime.framework.api import SlimeModel
from slime.framework.metrics import MetricConfig
from slime.framework.validation import describe

OPAQUE: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class ConfigError(ValueError):
    """An invalid module configuration; the message names the module and the field."""


class LogRotateConfig(SlimeModel):
    filePath: str = Field(default="", description="Log file (default /tmp/log/slime.log)")
    maxSizeMB: int = Field(default=0, description="Rotate at this size in MB (default 100)")
    maxBackups: int = Field(default=0, description="Rotated files kept (default 10)")
    maxAgeDay: int = Field(default=0, description="Days a rotated file is kept (default 10)")
    compress: bool = Field(default=False, description="Gzip rotated files")


class LogConfig(SlimeModel):
    logLevel: str = Field(default="", description="debug, info, warn, error (default info)")
    klogLevel: int = Field(default=0, description="client-go verbosity (default 5)")
    logRotate: bool = Field(default=False, description="Write to a rotated file instead of stdout")
    logRotateConfig: LogRotateConfig | None = Field(default=None, description="Where and how logs rotate")
    enableQuote: bool = Field(default=False, description="Quote log field values")
    ilogLevel: str = Field(default="", description='Per-scope levels, e.g. "default:info,xdsc:warn"')


class ConfigSource(SlimeModel):
    address: str = Field(default="", description="Config source address (xds://, k8s://, ...)")


class ClientGoTokenBucket(SlimeModel):
    qps: int = Field(default=0, description="Requests per second to the apiserver")
    burst: int = Field(default=0, description="Request burst to the apiserver")


class GlobalConfig(SlimeModel):
    """Settings shared by every module (upstream's ``Global``)."""

    service: str = Field(default="", description="Label key naming a workload's service (default app)")
    multicluster: str = Field(default="", description="Multicluster mode (upstream; unused here)")
    istioNamespace: str = Field(default="", description="Default istio-system")
    slimeNamespace: str = Field(default="", description="Default mesh-operator")
    log: LogConfig | None = Field(default=None, description="Log levels and rotation")
    misc: dict[str, str] = Field(
        default_factory=dict, description="String options; defaults are merged per key"
    )
    istioRev: str = Field(default="", description="Comma-separated istio.io/rev values this instance serves")
    strictRev: bool = Field(default=False, description="Objects without istio.io/rev are out of scope")
    configSources: list[ConfigSource] = Field(default_factory=list, description="Config sources (upstream)")
    masterUrl: str = Field(default="", description="Kubernetes apiserver URL (upstream; the kubeconfig here)")
    configRev: str = Field(default="", description="Revision of the config objects to read (upstream)")
    clientGoTokenBucket: ClientGoTokenBucket | None = Field(default=None, description="Client rate limits")
    selfResourceRev: str = Field(default="", description="Revision of slime's own resources (upstream)")
    istioConfigSource: ConfigSource | None = Field(default=None, description="Where Istio config is read")
    deployRev: str = Field(default="", description="Revision of the deployment (upstream)")
    enableConvertSeToIstioRes: bool = Field(default=False, description="Convert ServiceEntries (upstream)")

    def with_defaults(self) -> GlobalConfig:
        """Upstream's defaults (framework/bootstrap/config.go) filled into empty fields."""
        log = self.log or LogConfig()
        rotate = log.logRotateConfig
        if log.logRotate:
            rotate = rotate or LogRotateConfig()
            rotate = rotate.model_copy(
                update={
                    "filePath": rotate.filePath or "/tmp/log/slime.log",  # noqa: S108 - upstream's default path
                    "maxSizeMB": rotate.maxSizeMB or 100,
                    "maxBackups": rotate.maxBackups or 10,
                    "maxAgeDay": rotate.maxAgeDay or 10,
                }
            )
        log = log.model_copy(
            update={
                "logLevel": log.logLevel or "info",
                "klogLevel": log.klogLevel or 5,
                "logRotateConfig": rotate,
            }
        )
        return self.model_copy(
            update={
                "service": self.service or "app",
                "istioNamespace": self.istioNamespace or "istio-system",
                "slimeNamespace": self.slimeNamespace or "mesh-operator",
                "misc": {**DEFAULT_MISC, **self.misc},
                "log": log,
            }
        )


DEFAULT_MISC: Mapping[str, str] = {
    "metrics-addr": ":8080",
    "aux-addr": ":8081",
    "enableLeaderElection": "off",
    "logSourcePort": ":8082",
    "seLabelSelectorKeys": "app",
    "xdsSourceEnableIncPush": "true",
    "pathRedirect": "",
}


class BundleModule(SlimeModel):
    name: str = Field(default="", description="The item's name; its config is the entry with this name")
    kind: str = Field(default="", description="The item's module kind")


class Bundle(SlimeModel):
    modules: list[BundleModule] = Field(default_factory=list, description="The modules of the bundle")


class ModuleConfig(SlimeModel):
    """One module's configuration."""

    name: str = Field(default="", description="Instance name; also names the objects slime-boot creates")
    kind: str = Field(default="", description="Module kind (lazyload, limiter, plugin, ...); empty: the name")
    enable: bool = Field(default=False, description="Run the module")
    mode: Literal["Module", "BundleItem"] = Field(
        default="Module", description="BundleItem: runs inside the bundle that lists it"
    )
    bundle: Bundle | None = Field(default=None, description="Makes this entry a bundle of the listed modules")
    general: dict[str, Any] = Field(
        default_factory=dict, description="Module-specific configuration", json_schema_extra=OPAQUE
    )
    global_: GlobalConfig | None = Field(
        default=None, alias="global", description="Settings shared by modules"
    )
    metric: MetricConfig | None = Field(default=None, description="Metric sources (limiter, lazyload)")

    @property
    def effective_kind(self) -> str:
        return self.kind or self.name

    @property
    def globals(self) -> GlobalConfig:
        """The global section with upstream's defaults filled in."""
        return (self.global_ or GlobalConfig()).with_defaults()


def default_module_config(kind: str) -> ModuleConfig:
    """The config of a module that was selected but not configured: enabled, upstream's defaults."""
    return ModuleConfig(name=kind, kind=kind, enable=True, global_=GlobalConfig().with_defaults())


Source = str | Mapping[str, Any] | Iterable[Mapping[str, Any]]


def load_module_configs(source: Source, *, enabled_only: bool = False) -> list[ModuleConfig]:
    """Every module's effective config, in order; disabled ones too unless ``enabled_only``.

    ``source`` is YAML/JSON text (one document, a list, or several documents), a mapping,
    or a list of mappings. A bundle (an entry with ``bundle.modules``) expands into its
    items: the entries with ``mode: BundleItem`` and a listed name. An item's ``global`` is
    the bundle's with the item's merged over it: what the item sets wins, maps are merged,
    lists are appended. The bundle's own ``enable`` is not used (as in upstream's process);
    each item's is. Each kind may appear once.
    """
    docs = _documents(source)
    configs = [_parse(doc, i) for i, doc in enumerate(docs)]
    raw_globals = {id(c): _doc_global(doc) for c, doc in zip(configs, docs, strict=True)}
    names = [c.name for c in configs if c.name]
    if len(names) != len(set(names)):
        raise ConfigError(f"module {next(n for n in names if names.count(n) > 1)!r} is configured twice")
    bundles = [c for c in configs if c.bundle is not None]
    if len(bundles) > 1:
        raise ConfigError(f"only one bundle is supported, got {', '.join(_label(b) for b in bundles)}")
    items = {c.name: c for c in configs if c.mode == "BundleItem" and c.bundle is None}
    result = [
        _effective(c, c.global_ or GlobalConfig())
        for c in configs
        if c.mode != "BundleItem" and c.bundle is None
    ]
    for bundle in bundles:
        assert bundle.bundle is not None
        base = (bundle.global_ or GlobalConfig()).with_defaults().model_dump(by_alias=True)
        for entry in bundle.bundle.modules:
            item = items.pop(entry.name, None)
            if item is None:
                raise ConfigError(
                    f"bundle {_label(bundle)} lists module {entry.name!r}, which has no BundleItem config"
                )
            merged = _merge(base, raw_globals[id(item)])
            try:
                glob = GlobalConfig.model_validate(merged)
            except ValidationError as e:
                raise _error(item, e, "global") from None
            result.append(_effective(item.model_copy(update={"kind": item.kind or entry.kind}), glob))
    if items:
        raise ConfigError(f"module {next(iter(items))!r} has mode BundleItem but no bundle lists it")
    _check_unique(result)
    return [c for c in result if c.enable] if enabled_only else result


def _documents(source: Source) -> list[Mapping[str, Any]]:
    docs: list[Any]
    if isinstance(source, str):
        try:
            docs = [d for d in yaml.safe_load_all(source) if d is not None]
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML or JSON: {e}") from None
        if len(docs) == 1 and isinstance(docs[0], list):
            docs = docs[0]
    elif isinstance(source, Mapping):
        docs = [source]
    else:
        docs = list(source)
    for i, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            raise ConfigError(f"module #{i}: expected a mapping, got {type(doc).__name__}")
    return docs


def _parse(doc: Mapping[str, Any], index: int) -> ModuleConfig:
    try:
        cfg = ModuleConfig.model_validate(doc)
    except ValidationError as e:
        name = doc.get("name") or doc.get("kind")
        raise _error(f"{name!r}" if name else f"#{index}", e) from None
    if not cfg.effective_kind and cfg.bundle is None:
        raise ConfigError(f"module #{index}: set name or kind")
    return cfg


def _doc_global(doc: Mapping[str, Any]) -> dict[str, Any]:
    # What the document itself set, so that only those values override the bundle's.
    value = doc.get("global")
    return dict(value) if isinstance(value, Mapping) else {}


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def _effective(cfg: ModuleConfig, glob: GlobalConfig) -> ModuleConfig:
    return cfg.model_copy(
        update={"kind": cfg.effective_kind, "name": cfg.name or cfg.kind, "global_": glob.with_defaults()}
    )


def _check_unique(configs: list[ModuleConfig]) -> None:
    seen: dict[str, str] = {}
    for cfg in configs:
        if cfg.kind in seen:
            raise ConfigError(
                f"module kind {cfg.kind!r} is configured twice ({seen[cfg.kind]!r} and {cfg.name!r})"
            )
        seen[cfg.kind] = cfg.name


def _label(cfg: ModuleConfig) -> str:
    return repr(cfg.name or cfg.kind)


def _error(module: ModuleConfig | str, error: ValidationError, root: str = "") -> ConfigError:
    label = _label(module) if isinstance(module, ModuleConfig) else module
    return ConfigError(f"module {label}: " + "; ".join(describe(error, root)))
