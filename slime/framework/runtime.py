"""What a module instance gets in the operator: its module, validated settings, and the clients
and caches the process shares (API client, the cluster informers, child-name claims, events)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from slime.framework.cluster import Cluster
from slime.framework.events import Recorder
from slime.framework.kube import Kube
from slime.framework.module import Module, Settings
from slime.framework.peering import PeeringGate
from slime.framework.sync import Claims


@dataclass
class Shared:
    """One per process: what every module instance uses together."""

    kube: Kube
    cluster: Cluster
    claims: Claims = field(default_factory=Claims)
    recorder: Recorder | None = None
    peering: PeeringGate = field(default_factory=PeeringGate)
    instance: str = ""  # this process's INSTANCE label value (slime.framework.sync), "" for none

    def __post_init__(self) -> None:
        if self.recorder is None:
            self.recorder = Recorder(self.kube)


@dataclass
class ModuleRuntime:
    """One enabled module instance."""

    module: Module
    settings: Settings
    shared: Shared
    config: Any = None  # the ModuleConfig it came from
    namespaces: list[str] = field(default_factory=list)  # watched namespaces; empty: all
    state: dict[str, Any] = field(default_factory=dict)
    # Re-evaluate the CRs of this namespace and name soon (debounced); set by the reconciler.
    wake: Callable[[str, str], None] | None = None

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def kube(self) -> Kube:
        return self.shared.kube

    @property
    def peering(self) -> PeeringGate:
        return self.shared.peering

    @property
    def instance(self) -> str:
        return self.shared.instance


@functools.cache
def api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """A blocking client: in-cluster when running in a pod, else the kubeconfig. Raises
    ``k8s_config.ConfigException`` (a clear message) when neither is there."""
    configuration = k8s.Configuration()
    if kubeconfig:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(client_configuration=configuration)
    # Many worker threads share this client; the default pool of 4 would serialise them.
    configuration.connection_pool_maxsize = 32
    # No urllib3 retries: callers pace their own retries, and each retry logged a warning line.
    configuration.retries = False
    return k8s.ApiClient(configuration)
