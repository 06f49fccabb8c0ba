"""One kopf operator process hosting any set of modules (upstream's bundle mode)."""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import random
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from slime.framework.config import ModuleConfig, default_module_config
from slime.framework.peering import PeeringGate, peering_objects
from slime.framework.runtime import ModuleRuntime

log = logging.getLogger("slime")

# Module kind -> the package whose ``controller.register(registry, runtime)`` wires it in.
CONTROLLERS = {
    "limiter": "slime.modules.limiter.controller",
    "plugin": "slime.modules.plugin.controller",
    "lazyload": "slime.modules.lazyload.controller",
    "boot": "slime.boot.controller",
}
PEERING_NAME = "slime"


@dataclass
class RunOptions:
    modules: list[str] = field(default_factory=lambda: list(CONTROLLERS))
    configs: list[ModuleConfig] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    kubeconfig: str | None = None
    liveness: str | None = "http://0.0.0.0:8080/healthz"
    metrics_addr: str | None = "0.0.0.0:9090"
    peering: bool = True
    priority: int | None = None
    log_json: bool = True
    verbose: bool = False


def module_runtimes(options: RunOptions) -> list[ModuleRuntime]:
    """The enabled modules, each with its config (upstream's defaults when none is given)."""
    by_kind = {cfg.effective_kind: cfg for cfg in options.configs}
    runtimes = []
    for kind in options.modules:
        if kind not in CONTROLLERS:
            raise ValueError(f"unknown module {kind!r}; known: {', '.join(CONTROLLERS)}")
        cfg = by_kind.get(kind) or default_module_config(kind)
        if not cfg.enable:
            log.info("Skipped module %s: disabled in its config", kind)
            continue
        runtimes.append(ModuleRuntime(name=cfg.name or kind, kind=kind, config=cfg, kubeconfig=options.kubeconfig,
                                      namespaces=list(options.namespaces)))
    return runtimes


def build_registry(runtimes: list[ModuleRuntime], options: RunOptions) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> Any:
        if options.kubeconfig is None:
            creds = kopf.login_with_service_account(**kwargs)
            if creds:
                return creds
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "slime.io/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="slime.io")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="slime.io")
        settings.posting.level = logging.WARNING  # only warnings become Kubernetes Events
        settings.watching.server_timeout = 300
        settings.execution.max_workers = 16

    for runtime in runtimes:
        controller = importlib.import_module(CONTROLLERS[runtime.kind])
        controller.register(registry, runtime)
        log.info("Registered module %s (kind %s)", runtime.name, runtime.kind)
    return registry


def ensure_peering(options: RunOptions) -> None:
    """Create the peering object replicas elect through, if missing (kopf needs it to exist)."""
    from kubernetes.client.exceptions import ApiException

    from slime.framework.kube import Kube
    from slime.framework.runtime import api_client

    kube = Kube(api_client(options.kubeconfig))
    for kind, ns in peering_objects(options.namespaces):
        try:
            if kube.get(kind, ns, PEERING_NAME) is None:
                meta = {"name": PEERING_NAME, **({"namespace": ns} if ns else {})}
                kube.apply({"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta})
                log.info("Created %s %s", kind.kind, PEERING_NAME)
        except ApiException as e:
            log.warning("Could not ensure %s %s (%s): replicas will not elect a leader", kind.kind,
                        PEERING_NAME, e.reason)


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
    runtimes = module_runtimes(options)
    # Peers with the highest priority run; the others pause: one active replica.
    priority = options.priority if options.priority is not None else random.randint(1, 2**31 - 1)
    identity = f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"
    if options.peering:
        ensure_peering(options)
    for runtime in runtimes:
        runtime.peering = PeeringGate(identity=identity, priority=priority, namespaces=options.namespaces,
                                      name=PEERING_NAME, standalone=not options.peering,
                                      kube_factory=functools.partial(getattr, runtime, "kube"))
    registry = build_registry(runtimes, options)
    if options.metrics_addr:
        host, _, port = options.metrics_addr.rpartition(":")
        start_http_server(int(port), addr=host or "0.0.0.0")
        log.info("Serving metrics on %s/metrics", options.metrics_addr)
    asyncio.run(kopf.operator(
        registry=registry,
        clusterwide=not options.namespaces,
        namespaces=options.namespaces,
        standalone=not options.peering,
        peering_name=PEERING_NAME if options.peering else None,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=options.liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    ))
