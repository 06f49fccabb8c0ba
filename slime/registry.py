"""The modules of slime, listed once. Everything else (``slime run --modules``, the CRDs,
``slime render``, the operator, the demo, the golden tests) derives from this list.

Adding a module: a folder under ``slime/modules/`` exporting ``MODULE`` (see
``slime.framework.module``) and one line here. ``SLIME_EXTRA_MODULES`` (comma-separated
import paths of packages exporting ``MODULE``) adds modules without editing this file: the
tests use it for a test module.
"""

from __future__ import annotations

import functools
import importlib
import os

from pydantic import ValidationError

from slime.framework import kinds
from slime.framework.config import ConfigError, ModuleConfig, default_module_config
from slime.framework.crdinfo import CrdInfo
from slime.framework.module import Module, ModuleInfo, Settings
from slime.framework.validation import describe

PACKAGES = (
    "slime.modules.limiter",
    "slime.modules.plugin",
    "slime.modules.lazyload",
    "slime.boot",
)
EXTRA_ENV = "SLIME_EXTRA_MODULES"


class UnknownModuleError(ValueError):
    pass


def _load(package: str) -> Module:
    try:
        imported = importlib.import_module(package)
    except ImportError as e:
        raise UnknownModuleError(f"module package {package!r} cannot be imported ({e}); "
                                 f"check {EXTRA_ENV}") from None
    module = getattr(imported, "MODULE", None)
    if not isinstance(module, Module):
        raise TypeError(f"{package} does not export MODULE = slime.framework.module.Module(...)")
    return module


@functools.cache
def _modules(extra: str) -> tuple[Module, ...]:
    packages = [*PACKAGES, *(p.strip() for p in extra.split(",") if p.strip())]
    found = tuple(_load(p) for p in packages)
    names = [m.name for m in found]
    if len(names) != len(set(names)):
        raise ValueError(f"two modules are named {next(n for n in names if names.count(n) > 1)!r}")
    for module in found:
        for info in module.kinds:
            kinds.register(info.kind_ref)
    return found


def modules() -> tuple[Module, ...]:
    """Every module, in registry order (extra modules last)."""
    return _modules(os.environ.get(EXTRA_ENV, ""))


def builtin() -> tuple[Module, ...]:
    """The modules of this package (``PACKAGES``), without extra ones."""
    return _modules("")


def names() -> list[str]:
    return [m.name for m in modules()]


def get(name: str) -> Module:
    for module in modules():
        if module.name == name:
            return module
    raise UnknownModuleError(f"unknown module {name!r}; known: {', '.join(names())}")


def crd_infos() -> list[CrdInfo]:
    return [info for m in modules() for info in m.kinds]


def module_of_kind(api_version: str, kind: str) -> Module | None:
    for module in modules():
        for info in module.kinds:
            if info.api_version == api_version and info.kind == kind:
                return module
    return None


def settings_for(configs: list[ModuleConfig], wanted: list[str] | None = None,
                 ) -> list[tuple[Module, Settings, ModuleConfig]]:
    """Each wanted module (default: all) with its validated settings: its config from ``configs``
    or upstream's defaults. Disabled modules are left out. Raises ``ConfigError`` naming the module
    and the field for a module config its model refuses (a typo in ``general``)."""
    by_kind = {cfg.effective_kind: cfg for cfg in configs}
    unknown = sorted(set(by_kind) - set(names()))
    if unknown:
        raise ConfigError(f"module config for {', '.join(map(repr, unknown))}: no such module "
                          f"(known: {', '.join(names())})")
    validated = {}
    for kind, cfg in by_kind.items():  # every config given, enabled or not: a typo is a typo
        try:
            validated[kind] = get(kind).config.model_validate(cfg.general or {})
        except ValidationError as e:
            raise ConfigError(f"module {cfg.name or kind!r}: " + "; ".join(describe(e, "general"))) from None
    out = []
    for name in wanted if wanted is not None else names():
        module = get(name)
        cfg = by_kind.get(name) or default_module_config(name)
        if not cfg.enable:
            continue
        general = validated.get(name) or module.config.model_validate({})
        out.append((module, Settings(name=cfg.name or name, general=general, globals=cfg.globals,
                                     metric=cfg.metric, catalog=catalog()), cfg))
    return out


def catalog() -> dict[str, ModuleInfo]:
    """Every module's name, RBAC rules and kinds (what boot needs to deploy a module)."""
    from slime.framework.rbac import rules_for

    return {m.name: ModuleInfo(name=m.name, rules=tuple(rules_for([m])),
                               kinds=tuple((i.kind, i.group) for i in m.kinds), config=m.config,
                               manages=tuple(m.manages))
            for m in modules()}
