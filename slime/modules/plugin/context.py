"""The context of one PluginManager or EnvoyPlugin: module config, revision scope and the image
pull Secrets its wasm and rider plugins name (in its namespace). Pure: reads a ``ClusterView``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slime.framework.kinds import SECRET
from slime.framework.module import ClusterView, Metrics, Settings
from slime.modules.plugin.common import PluginContext
from slime.modules.plugin.config import PluginModule

SECRET_KEYS = ("image_pull_secret_name", "imagePullSecretName")


def secret_names(cr: Mapping[str, Any]) -> list[str]:
    """Names of the Secrets the CR's wasm and rider plugins refer to, in order, once each."""
    spec = cr.get("spec")
    names: list[str] = []
    if not isinstance(spec, Mapping):
        return names
    for key in ("plugin", "plugins"):
        plugins = spec.get(key)
        for plugin in plugins if isinstance(plugins, list) else ():
            for source in ("wasm", "rider"):
                remote = plugin.get(source) if isinstance(plugin, Mapping) else None
                for k in SECRET_KEYS if isinstance(remote, Mapping) else ():
                    name = remote.get(k)  # type: ignore[union-attr]
                    if isinstance(name, str) and name and name not in names:
                        names.append(name)
    return names


def plugin_context(cr: Mapping[str, Any], cluster: ClusterView, settings: Settings,
                   metrics: Metrics | None = None) -> PluginContext:
    general = settings.general
    if not isinstance(general, PluginModule):
        general = PluginModule.model_validate(general or {})
    namespace = str((cr.get("metadata") or {}).get("namespace") or "default")
    secrets = {}
    for name in secret_names(cr):
        secret = cluster.get(SECRET, namespace, name)
        if secret is not None:
            secrets[name] = secret
    return PluginContext(
        config=general,
        istio_rev=settings.globals.istioRev,
        strict_rev=settings.globals.strictRev,
        secrets=secrets,
    )
