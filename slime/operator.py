"""One kopf operator process hosting any set of modules (upstream's bundle mode)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from slime import registry
from slime.framework import observability
from slime.framework.cluster import Cluster
from slime.framework.config import ModuleConfig
from slime.framework.kube import Kube
from slime.framework.peering import PeeringGate, peering_objects
from slime.framework.reconciler import Reconciler
from slime.framework.runtime import ModuleRuntime, Shared, api_client
from slime.framework.sync import instance_id

# kopf's peering: a replica counts as gone when not seen for this long; kopf renews its record
# 5-10 s before (at least every second). A standby takes over within about the lifetime plus its
# own poll (kopf's default of 60 s gave 38 s).
PEERING_LIFETIME = 10

log = logging.getLogger("slime")
PEERING_NAME = "slime"


@dataclass
class RunOptions:
    modules: list[str] | None = None  # None: every module of the registry
    configs: list[ModuleConfig] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    kubeconfig: str | None = None
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    metrics_addr: str | None = "0.0.0.0:9090"
    peering: bool = True
    priority: int | None = None
    peering_lifetime: int = PEERING_LIFETIME
    peering_name: str = PEERING_NAME  # replicas of one deployment elect through it; others use their own
    log_json: bool = True
    verbose: bool = False


def module_runtimes(options: RunOptions, shared: Shared) -> list[ModuleRuntime]:
    """The enabled modules, each with its validated settings (upstream's defaults when none given)."""
    runtimes = []
    for module, settings, cfg in registry.settings_for(options.configs, options.modules):
        runtimes.append(ModuleRuntime(module=module, settings=settings, shared=shared, config=cfg,
                                      namespaces=list(options.namespaces)))
    skipped = set(options.modules or registry.names()) - {r.module.name for r in runtimes}
    for name in sorted(skipped):
        log.info("Skipped module %s: disabled in its config", name)
    return runtimes


def build_registry(runtimes: list[ModuleRuntime], options: RunOptions) -> kopf.OperatorRegistry:
    kopf_registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=kopf_registry, id="login")
    def login(**kwargs: Any) -> Any:
        if options.kubeconfig is None:
            creds = kopf.login_with_service_account(**kwargs)
            if creds:
                return creds
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=kopf_registry, id="settings")
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "slime.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="slime.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="slime.io")
        settings.posting.enabled = False  # our own Events (slime.framework.events), de-duplicated
        settings.watching.server_timeout = 300
        settings.execution.max_workers = 16
        settings.peering.lifetime = options.peering_lifetime

    for runtime in runtimes:
        Reconciler(runtime).register(kopf_registry)
        log.info("Registered module %s (kinds %s)", runtime.name, ", ".join(i.kind for i in runtime.module.kinds))
    return kopf_registry


def ensure_peering(kube: Kube, options: RunOptions) -> None:
    """Create the peering object replicas elect through, if missing (kopf needs it to exist)."""
    from kubernetes.client.exceptions import ApiException

    name = options.peering_name
    for kind, ns in peering_objects(options.namespaces):
        try:
            if kube.get(kind, ns, name) is None:
                meta = {"name": name, **({"namespace": ns} if ns else {})}
                kube.apply({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta})
                log.info("Created %s %s", kind.kind, name)
        except ApiException as e:
            log.warning("Could not ensure %s %s (%s): replicas will not elect a leader", kind.kind,
                        name, e.reason)


class QuietRetries(logging.Filter):
    """kopf logs every retry of a failed request; during an apiserver outage that is a line per
    watch every few seconds. Keep the first attempt's line (the outage started) and drop the rest."""

    REPEAT = re.compile(r"^Request attempt #(\d+)(/\d+)? failed; will retry")

    def filter(self, record: logging.LogRecord) -> bool:
        m = self.REPEAT.match(record.getMessage())
        return m is None or m.group(1) == "1"


class QuietWatchHandlers(logging.Filter):
    """Drop kopf's "Handler ... succeeded." for handlers that only note a change (one per pod
    event would drown the log); failures and everything else still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno == logging.INFO and "_changed' succeeded." in message)


def run(options: RunOptions, stop_flag: threading.Event | None = None,
        ready_flag: threading.Event | None = None) -> None:
    if options.kubeconfig:
        os.environ["KUBECONFIG"] = options.kubeconfig
    kopf.configure(verbose=options.verbose,
                   log_format=kopf.LogFormat.JSON if options.log_json else kopf.LogFormat.FULL,
                   log_refkey="object" if options.log_json else None)
    logging.getLogger("kopf.objects").addFilter(QuietWatchHandlers())
    for handler in logging.getLogger().handlers:
        handler.addFilter(QuietRetries())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # no line per /healthz probe
    observability.set_build_info(version())
    kube = Kube(api_client(options.kubeconfig))
    shared = Shared(kube=kube, cluster=Cluster(kube, options.namespaces), instance=instance_id(options.peering_name))
    runtimes = module_runtimes(options, shared)
    # Peers with the highest priority run; the others pause: one active replica.
    priority = options.priority if options.priority is not None else random.randint(1, 2**31 - 1)
    identity = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
    if options.peering:
        ensure_peering(kube, options)
    shared.peering = PeeringGate(identity=identity, priority=priority, namespaces=options.namespaces,
                                 name=options.peering_name, standalone=not options.peering, kube_factory=lambda: kube)
    shared.peering.on_change(lambda active: observability.ACTIVE.set(1 if active else 0))
    observability.ACTIVE.set(0 if options.peering else 1)
    kopf_registry = build_registry(runtimes, options)
    if options.metrics_addr:
        host, _, port = options.metrics_addr.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0")
        log.info("Serving metrics on %s/metrics", options.metrics_addr)
    asyncio.run(kopf.operator(
        registry=kopf_registry,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        standalone=not options.peering,
        peering_name=options.peering_name if options.peering else None,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=options.liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    ))


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("slime")
    except PackageNotFoundError:
        return "0.0.0+unknown"
