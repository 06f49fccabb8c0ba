"""What a module's controller gets when it is registered into the operator."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from slime.framework.kube import Kube
from slime.framework.peering import PeeringGate


@dataclass
class ModuleRuntime:
    """One enabled module: its config and the shared clients of the process."""

    name: str
    kind: str
    config: Any  # slime.framework.config.ModuleConfig (kept loose to avoid an import cycle)
    kubeconfig: str | None = None
    namespaces: list[str] = field(default_factory=list)  # watched namespaces; empty: all
    state: dict[str, Any] = field(default_factory=dict)
    # Whether this replica is the active one; the module's own loops wait on it (kopf's are paused by kopf).
    peering: PeeringGate = field(default_factory=PeeringGate)

    @functools.cached_property
    def kube(self) -> Kube:
        return Kube(api_client(self.kubeconfig))


@functools.cache
def api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """A blocking client: in-cluster when running in a pod, else the kubeconfig."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    # Many handler threads share this client; the default pool of 4 would serialise them.
    configuration.connection_pool_maxsize = 32
    return k8s.ApiClient(configuration)
