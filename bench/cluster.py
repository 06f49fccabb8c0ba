"""The cluster phases: a real local apiserver, the operator as a subprocess, real Prometheus.

Everything is started inside one ``contextlib.ExitStack`` (see ``Env.start``), so the cluster,
Prometheus, the exporter and the operator are stopped in reverse order on success, failure or Ctrl-C.
Times come from watches (not polling): a ``Watcher`` thread timestamps every event on arrival.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from bench.mix import GROUP, PLURAL, RLS_CM, VERSION, Item, items, module_config
from slime.devcluster import DevCluster, find_controlplane_bin, free_port, istio_crds
from slime.devtools import die_with_parent, stop_process
from slime.devtools.prometheus import Exporter, run_prometheus

REPO = Path(__file__).resolve().parents[1]
EF = ("networking.istio.io", "v1alpha3", "envoyfilters")
SL = (GROUP, VERSION, PLURAL)
REACTION_NS = "bench-reaction"
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE"}


def ef_name(it: Item) -> str:
    return f"{it.name}.{it.namespace}.ratelimit"


def tokens(obj: dict[str, Any] | None) -> int | None:
    """maxTokens of the first local rate limit descriptor of an EnvoyFilter (None: none)."""
    def find(node: Any) -> Any:
        if isinstance(node, dict):
            if "descriptors" in node:
                return node["descriptors"]
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                if (hit := find(child)) is not None:
                    return hit
        return None

    found = find((obj or {}).get("spec"))
    return int(found[0]["tokenBucket"]["maxTokens"]) if found else None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def pct(p: float) -> float:  # nearest rank
        return s[max(0, math.ceil(p / 100 * len(s)) - 1)]

    return {"n": len(s), "p50": pct(50), "p90": pct(90), "p99": pct(99), "max": s[-1], "mean": statistics.fmean(s)}


def new_api(kubeconfig: Path) -> k8s.ApiClient:
    cfg = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    cfg.connection_pool_maxsize = 16  # the set-up writes from a thread pool
    return k8s.ApiClient(cfg)


# ------------------------------------------------------------------------------------------- watches


@dataclass
class _Waiter:
    key: tuple[str, str]
    match: Callable[[str, dict[str, Any]], bool]
    done: threading.Event = field(default_factory=threading.Event)
    at: float = 0.0


class Watcher:
    """Watches one custom resource cluster-wide in a daemon thread; keeps the current objects,
    counts events, and wakes waiters whose predicate an event satisfies (stamped on arrival)."""

    def __init__(self, api: k8s.ApiClient, gvp: tuple[str, str, str]) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.gvp = gvp
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.events = 0
        self.last_event = time.monotonic()
        self._waiters: list[_Waiter] = []
        self._stop = threading.Event()
        listed: Any = self.custom.list_cluster_custom_object(*gvp)
        for obj in listed["items"]:
            self.objects[self._key(obj)] = obj
        self._rv = listed["metadata"]["resourceVersion"]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"watch-{gvp[2]}", daemon=True)
        self.thread.start()

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                w = k8s_watch.Watch()
                for ev in w.stream(self.custom.list_cluster_custom_object, *self.gvp, resource_version=self._rv,
                                   timeout_seconds=300, allow_watch_bookmarks=False):
                    self._on_event(time.monotonic(), ev["type"], ev["object"])
                    if self._stop.is_set():
                        w.stop()
        except BaseException as e:  # shown by the caller: a dead watch would make every wait time out
            if not self._stop.is_set():
                self.error = e

    def _on_event(self, at: float, kind: str, obj: dict[str, Any]) -> None:
        if kind == "ERROR":
            raise RuntimeError(f"watch {self.gvp[2]}: {obj}")
        self._rv = obj["metadata"]["resourceVersion"]
        key = self._key(obj)
        with self.lock:
            self.events += 1
            self.last_event = at
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            for w in [w for w in self._waiters if w.key == key and w.match(kind, obj)]:
                w.at = at
                w.done.set()
                self._waiters.remove(w)

    def expect(self, key: tuple[str, str], match: Callable[[str, dict[str, Any]], bool]) -> _Waiter:
        """Register before acting; ``waiter.done`` is set, ``waiter.at`` stamped, by the first matching event."""
        waiter = _Waiter(key, match)
        with self.lock:
            self._waiters.append(waiter)
        return waiter

    def cancel(self, waiter: _Waiter) -> None:
        with self.lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def count(self, keys: Iterable[tuple[str, str]]) -> int:
        with self.lock:
            return sum(k in self.objects for k in keys)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"watch on {self.gvp[2]} died: {self.error!r}")

    def stop(self) -> None:
        self._stop.set()


# ------------------------------------------------------------------------------------------- operator


class Operator:
    """``slime run --modules limiter`` as a subprocess in its own session (our Ctrl-C does not reach it;
    we stop it in order), optionally under cProfile (main thread: the kopf event loop)."""

    def __init__(self, kubeconfig: Path, config: Path, log_path: Path, profile: Path | None = None,
                 modules: str = "limiter") -> None:
        self.liveness, self.metrics_port = free_port(), free_port()
        self.log_path = log_path
        self.log: IO[bytes] = log_path.open("wb")
        self.profile = profile
        self.stopped: dict[str, Any] = {}
        entry = ["-m", "bench.profiled", str(profile), "--"] if profile else ["-m", "slime.cli"]
        cmd = [sys.executable, *entry, "run", "--kubeconfig", str(kubeconfig),
               "--modules", modules, "--config", str(config), "--standalone",
               "--liveness", f"http://127.0.0.1:{self.liveness}/healthz",
               "--metrics-addr", f"127.0.0.1:{self.metrics_port}", "--log-format", "json"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=REPO, start_new_session=True, preexec_fn=die_with_parent)

    def _get(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return str(r.read().decode())

    def wait_alive(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            with contextlib.suppress(OSError):
                self._get(self.liveness, "/healthz")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"operator not alive after {timeout:.0f}s; log {self.log_path}")
            time.sleep(0.2)

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{tail}")

    def counter(self, name: str) -> dict[str, float]:
        """Samples of ``name`` from /metrics by label string (``verb=apply,kind=EnvoyFilter``)."""
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(self._get(self.metrics_port, "/metrics")):
            for s in family.samples:
                if s.name == name:
                    out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
        return out

    def totals(self) -> dict[str, float]:
        """Reconciles so far, their summed duration, and API writes (sums over labels)."""
        return {"reconciles": sum(self.counter("slime_reconciles_total").values()),
                "reconcile_seconds": sum(self.counter("slime_reconcile_duration_seconds_sum").values()),
                "api_writes": sum(self.counter("slime_api_writes_total").values())}

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: total, the main thread (kopf's event loop), the other threads."""
        tick = os.sysconf("SC_CLK_TCK")
        main = other = 0.0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
                secs = (int(fields[11]) + int(fields[12])) / tick
                if int(task.name) == self.proc.pid:
                    main += secs
                else:
                    other += secs
        return {"total": main + other, "main": main, "threads": other}

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def restart_profile(self) -> None:
        """Under --profile: drop the stats so far; the kept stats then cover what follows."""
        if self.profile and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR2)

    def stop(self, timeout: float = 30) -> None:
        if self.profile and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not self.profile.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        t = time.monotonic()
        killed = stop_process(self.proc, timeout)
        self.log.close()
        self.stopped = {"seconds": time.monotonic() - t, "returncode": self.proc.returncode, "killed": killed}


# ------------------------------------------------------------------------------------------- environment


@dataclass
class Env:
    """The running test bed. ``start`` enters everything into ``stack``."""

    stack: contextlib.ExitStack
    workdir: Path
    limiters: int = 1000
    namespaces: int = 10
    refresh: float = 1.0
    scrape: float = 1.0
    profile: bool = False
    log: Callable[[str], None] = print
    spares: int = 0  # Services (with pods) made for limiters the apply phase creates
    cluster: DevCluster = field(init=False)
    api: k8s.ApiClient = field(init=False)
    exporter: Exporter = field(init=False)
    operator: Operator = field(init=False)
    efs: Watcher = field(init=False)
    sls: Watcher = field(init=False)
    work: list[Item] = field(init=False)
    flip: Item = field(init=False)
    spare: list[Item] = field(init=False)
    timings: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        t = time.monotonic()
        crds = [*sorted(REPO.glob("crds/*.yaml")), istio_crds()]
        self.cluster = self.stack.enter_context(DevCluster(crds, bin_dir=find_controlplane_bin()))
        self.timings["cluster_start_s"] = time.monotonic() - t
        self.log(f"cluster up in {self.timings['cluster_start_s']:.1f}s ({self.cluster.server})")
        self.api = new_api(self.cluster.kubeconfig)
        self.stack.callback(self.api.close)
        self.work = items(self.limiters, self.namespaces)
        # Spares are local limiters: the quota shows in their EnvoyFilter.
        self.spare = [it for it in items(3 * self.spares, self.namespaces, prefix="new")
                      if it.kind in ("header", "average")][:self.spares]
        self.exporter = self.stack.enter_context(Exporter())
        self.flip = Item(REACTION_NS, "flip", "adaptive")  # the reaction phase moves its metric
        for it in [*self.work, self.flip]:  # adaptive limiters are over their threshold: they have a filter too
            if it.kind == "adaptive":
                for pod in it.pod_names:
                    self.exporter.set_cpu(it.namespace, pod, 150)
        t = time.monotonic()
        url = self.stack.enter_context(run_prometheus([self.exporter.target], scrape_interval=f"{self.scrape}s"))
        self.log(f"prometheus up in {time.monotonic() - t:.1f}s ({url}, scraping every {self.scrape:g}s)")
        self._populate()
        cfg = self.workdir / "limiter.yaml"
        cfg.write_text(yaml.safe_dump(module_config(f"{self.refresh:g}s", url)))
        profile = self.workdir / "operator.prof" if self.profile else None
        self.operator = Operator(self.cluster.kubeconfig, cfg, self.workdir / "operator.log", profile)
        self.stack.callback(self.operator.stop)
        self.operator.wait_alive()
        watch_api = new_api(self.cluster.kubeconfig)
        self.stack.callback(watch_api.close)
        self.efs = Watcher(watch_api, EF)
        self.stack.callback(self.efs.stop)
        self.sls = Watcher(watch_api, SL)
        self.stack.callback(self.sls.stop)

    def _populate(self) -> None:
        """Namespaces, Running pods and Services for every limiter (and the spares), before any limiter
        exists: the operator starts on a populated cluster, as it would in a real mesh."""
        t = time.monotonic()
        core = k8s.CoreV1Api(self.api)
        for ns in sorted({it.namespace for it in self.work + self.spare} | {REACTION_NS}):
            core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
        everything = [*self.work, *self.spare, self.flip]

        def make(it: Item) -> None:
            for i, pod in enumerate(it.pod_names):
                body = {"metadata": {"name": pod, "labels": it.labels},
                        "spec": {"containers": [{"name": "app", "image": "app"}]}}
                core.create_namespaced_pod(it.namespace, body)  # type: ignore[arg-type]
                ip = f"10.{zlib.crc32(it.name.encode()) % 250}.{len(pod) % 250}.{i + 1}"
                core.patch_namespaced_pod_status(pod, it.namespace, {"status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
            core.create_namespaced_service(it.namespace, it.service())  # type: ignore[arg-type]

        _parallel(make, everything)
        self.timings["populate_s"] = time.monotonic() - t
        pods = sum(len(it.pod_names) for it in everything)
        self.log(f"created {len(everything)} Services and {pods} Running pods in {self.timings['populate_s']:.1f}s")

    def check(self) -> None:
        self.operator.check()
        self.efs.check()
        self.sls.check()

    def wait(self, what: str, done: Callable[[], bool], timeout: float) -> float:
        """Seconds until ``done()``; raises after ``timeout``."""
        t = time.monotonic()
        while not done():
            self.check()
            if time.monotonic() - t > timeout:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            time.sleep(0.1)
        return time.monotonic() - t

    def settle(self, quiet: float = 3.0, timeout: float = 120) -> float:
        """Wait until every SmartLimiter's status has observed its generation and no EnvoyFilter or
        SmartLimiter event came for ``quiet`` seconds (the operator has caught up)."""
        def observed() -> bool:
            with self.sls.lock:
                objs = list(self.sls.objects.values())
            return all((o.get("status") or {}).get("observedGeneration") == o["metadata"].get("generation")
                       for o in objs)

        def done() -> bool:
            return time.monotonic() - max(self.efs.last_event, self.sls.last_event) > quiet and observed()

        return self.wait("settle", done, timeout)

    def apiserver_writes(self) -> dict[str, float]:
        """apiserver_request_total of write verbs, by resource (everyone's writes: an independent count)."""
        ctx = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        pki = self.cluster.workdir / "pki"
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        with urllib.request.urlopen(f"{self.cluster.server}/metrics", timeout=10, context=ctx) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "apiserver_request_total" and s.labels.get("verb") in WRITE_VERBS:
                    res = s.labels.get("resource", "") + (f"/{s.labels['subresource']}"
                                                          if s.labels.get("subresource") else "")
                    out[res] = out.get(res, 0.0) + s.value
        return out


    def event_counts(self) -> dict[str, int]:
        """Kubernetes Events by "component reason kind" (summing their counts): who writes events."""
        out: dict[str, int] = {}
        for ev in k8s.CoreV1Api(self.api).list_event_for_all_namespaces().items:
            component = ev.reporting_component or (ev.source.component if ev.source else "") or "?"
            key = f"{component} {ev.reason} {ev.involved_object.kind}"
            out[key] = out.get(key, 0) + (ev.count or 1)
        return out


def _parallel(fn: Callable[[Any], object], args: list[Any], workers: int = 8) -> None:
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(fn, args):  # re-raises the first failure
            pass


# ------------------------------------------------------------------------------------------- phases


def setup_limiters(env: Env) -> dict[str, Any]:
    """Create the limiters (and the reaction phase's); time until every EnvoyFilter exists, and until
    the operator has caught up (statuses written)."""
    custom = k8s.CustomObjectsApi(env.api)
    limiters = [*env.work, env.flip]
    keys = [(it.namespace, ef_name(it)) for it in limiters]
    writes0 = env.apiserver_writes()
    t0 = time.monotonic()
    _parallel(lambda it: custom.create_namespaced_custom_object(GROUP, VERSION, it.namespace, PLURAL,
                                                                it.smartlimiter(7)), limiters)
    created = time.monotonic() - t0
    env.log(f"created {len(limiters)} SmartLimiters in {created:.1f}s; waiting for their EnvoyFilters...")
    timeout = 900 if env.profile else 300  # the profiler slows the operator ~3x
    all_efs = env.wait("all EnvoyFilters", lambda: env.efs.count(keys) == len(keys), timeout) + created
    try:
        settled: float | None = env.settle(timeout=300) + all_efs - 3.0
    except TimeoutError:  # statuses still being written: the quiet phase will show it
        settled = None
    return {"limiters": len(limiters), "create_calls_s": created, "all_envoyfilters_s": all_efs,
            "settled_s": settled, "global_limiters": sum(it.kind == "global" for it in env.work),
            "rls_entries_missing": missing_rls_entries(env),
            "apiserver_writes_by_resource": {k: v - writes0.get(k, 0) for k, v in env.apiserver_writes().items()
                                             if v != writes0.get(k, 0)}}


def missing_rls_entries(env: Env) -> int:
    """Global limiters whose entry is not in the shared RLS ConfigMap (should be 0 once settled)."""
    try:
        cm = k8s.CoreV1Api(env.api).read_namespaced_config_map(RLS_CM, "istio-system")
        doc = yaml.safe_load((cm.data or {}).get("config.yaml") or "{}") or {}
    except ApiException as e:
        if e.status != 404:
            raise
        doc = {}
    values = " ".join(str(d.get("value", "")) for d in doc.get("descriptors") or [])
    return sum(f"Service[{it.name}.{it.namespace}]" not in values for it in env.work if it.kind == "global")


def quiet(env: Env, refreshes: int = 6) -> dict[str, Any]:
    """Nothing changes for several refresh intervals: count writes, measure the operator's cost."""
    try:
        env.settle(timeout=60)
        settled = True
    except TimeoutError:  # measure anyway, flagged: the operator is still catching up
        settled = False
    seconds = max(refreshes * env.refresh, 10.0)
    events0 = env.event_counts()
    before = (env.operator.counter("slime_api_writes_total"), env.apiserver_writes(), env.operator.cpu(),
              env.efs.events, env.sls.events, env.operator.totals())
    time.sleep(seconds)
    env.check()
    after = (env.operator.counter("slime_api_writes_total"), env.apiserver_writes(), env.operator.cpu(),
             env.efs.events, env.sls.events, env.operator.totals())
    rec = {k: after[5][k] - before[5][k] for k in after[5]}
    events = {k: v - events0.get(k, 0) for k, v in env.event_counts().items() if v != events0.get(k, 0)}
    slime_writes = {k: v - before[0].get(k, 0) for k, v in after[0].items() if v != before[0].get(k, 0)}
    apiserver = {k: v - before[1].get(k, 0) for k, v in after[1].items() if v != before[1].get(k, 0)}
    cpu = {k: after[2][k] - before[2][k] for k in after[2]}
    return {"seconds": seconds, "refresh_s": env.refresh, "settled_before": settled, "limiters": len(env.sls.objects),
            "slime_api_writes": sum(slime_writes.values()), "slime_api_writes_by_label": slime_writes,
            "apiserver_writes_by_resource": apiserver, "kubernetes_events_by_source": events,
            "envoyfilter_events": after[3] - before[3], "smartlimiter_events": after[4] - before[4],
            "operator_rss_mib": env.operator.rss_mib(), "operator_cpu_s": cpu,
            "operator_cpu_percent_of_core": 100 * cpu["total"] / seconds,
            "rls_entries_missing_after": missing_rls_entries(env),
            "reconciles_per_s": rec["reconciles"] / seconds,
            "reconcile_mean_s": rec["reconcile_seconds"] / rec["reconciles"] if rec["reconciles"] else None}


def apply_latency(env: Env, rate: float = 10.0, duration: float = 30.0, timeout: float = 30.0) -> dict[str, Any]:
    """Create or update SmartLimiters at ``rate``/s; time from the call returning to the EnvoyFilter
    carrying the new quota, as seen by the watch."""
    custom = k8s.CustomObjectsApi(env.api)
    rng = random.Random(7)
    local = [it for it in env.work if it.kind in ("header", "average")]
    spare = list(env.spare)
    n = int(rate * duration)
    pending: list[tuple[str, _Waiter, float]] = []
    env.operator.restart_profile()  # a --profile run profiles the applies, not the set-up
    cpu0 = env.operator.cpu()
    start = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        quota = 1000 + i
        create = i % 2 == 1 and bool(spare)
        # Not a limiter with an apply in flight: the operator may rightly fold two quick updates into one.
        busy = {w.key for _, w, _ in pending if not w.done.is_set()}
        it = spare.pop(0) if create else rng.choice([x for x in local if (x.namespace, ef_name(x)) not in busy])
        want = quota if it.kind in ("header", "average") else None

        def match(kind: str, obj: dict[str, Any], want: int | None = want) -> bool:
            return kind != "DELETED" and tokens(obj) == want

        waiter = env.efs.expect((it.namespace, ef_name(it)), match)
        body = it.smartlimiter(quota)
        if create:
            custom.create_namespaced_custom_object(GROUP, VERSION, it.namespace, PLURAL, body)
        else:
            custom.patch_namespaced_custom_object(GROUP, VERSION, it.namespace, PLURAL, it.name,
                                                  {"spec": body["spec"]})
        pending.append(("create" if create else "update", waiter, time.monotonic()))
    sent = time.monotonic() - start
    deadline = time.monotonic() + timeout
    for _, w, _ in pending:
        w.done.wait(max(0.0, deadline - time.monotonic()))
        env.efs.cancel(w)
    env.check()
    cpu = {k: v - cpu0[k] for k, v in env.operator.cpu().items()}
    lat = {k: [w.at - t for kind, w, t in pending if w.done.is_set() and kind in k] for k in ("create", "update")}
    both = lat["create"] + lat["update"]
    return {"applies": n, "rate_per_s": n / sent, "timeouts": sum(not w.done.is_set() for _, w, _ in pending),
            "all": percentiles(both), "create": percentiles(lat["create"]), "update": percentiles(lat["update"]),
            "operator_cpu_s": cpu, "seconds": time.monotonic() - start, "target_p99_s": 0.2}


def reaction(env: Env, flips: int = 10, timeout: float = 30.0) -> dict[str, Any]:
    """Move the exported CPU of one pod across the limiter's ``cpu.sum > 100`` threshold; time from the
    flip to the EnvoyFilter appearing (above) or disappearing (below), as seen by the watch."""
    it = env.flip
    key = (it.namespace, ef_name(it))
    pod = it.pod_names[0]
    env.wait("the flip limiter's EnvoyFilter (cpu 150 > 100)", lambda: env.efs.count([key]) == 1, 60)
    rng = random.Random(11)
    times: dict[str, list[float]] = {"appear": [], "disappear": []}
    missed = 0
    for i in range(flips):
        time.sleep(rng.uniform(0, env.refresh + env.scrape))  # flips land anywhere in the refresh/scrape cycles
        above = i % 2 == 1
        if above != (env.efs.count([key]) == 0):
            break  # the last flip was missed and its change has not arrived: later ones would mean nothing
        waiter = env.efs.expect(key, (lambda k, o: k != "DELETED") if above else (lambda k, o: k == "DELETED"))
        env.exporter.set_cpu(it.namespace, pod, 150 if above else 50)
        t = time.monotonic()
        if waiter.done.wait(timeout):
            times["appear" if above else "disappear"].append(waiter.at - t)
        else:
            env.efs.cancel(waiter)
            missed += 1
    target = 2 * env.refresh + env.scrape
    return {"flips": flips, "refresh_s": env.refresh, "scrape_s": env.scrape, "target_s": target,
            "missed": missed, "timeout_s": timeout,
            "all": percentiles(times["appear"] + times["disappear"]),
            "appear": percentiles(times["appear"]), "disappear": percentiles(times["disappear"])}


def profile_top(path: Path, lines: int = 25) -> str:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(str(path), stream=out).sort_stats("tottime").print_stats(lines)
    return out.getvalue()


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
