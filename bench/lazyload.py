"""``python -m bench.lazyload``: the lazyload module's benchmark on the mesh test bed (prints numbers;
not a test: nothing fails on a miss). Writes ``bench/results/lazyload.json``.

One :class:`slime.meshbed.MeshBed` (real node, apiserver, istiod, Envoy sidecars, the operator in its
Pod with lazyload, auto-fence and the global-sidecar); the bed's config, except ``dependencyTTL``
(``--ttl``, default 600 s, so nothing learned is forgotten during a phase). Phases, in this order:

* ``learning``: a caller in a fenced namespace (``slime.io/serviceFenced=true``) calls ``--deps``
  Services it never called, one after the other (each a real HTTP call from inside its Pod, which
  detours through the global-sidecar). Per call, from the moment the call is sent (the Pod's clock,
  the same kernel clock as ours): the caller's Sidecar lists the host (the watch event, stamped on
  arrival), and the callee's cluster ``outbound|PORT||fqdn`` is in the caller's Envoy (its
  ``/config_dump``, polled every 25 ms).
* ``reduction``: ``--services`` headless Services (the bed's Service range is a /24) and a caller whose
  fence learned ``--fanout`` of them (access-log entries over gRPC, as the global-sidecar sends them):
  clusters and ``/config_dump`` bytes of its Envoy with its Sidecar and without (the fence disabled);
  then ``--changes`` label changes of one Service outside the fan-out, each state: istiod's pushes,
  push and convergence times (its monitoring port) and CPU (``/proc/<pid>/stat``, minus idle).
* ``writes``: ``--fences`` callers (Pods without sidecars behind their Services, fenced) and a gRPC
  client streaming ``StreamAccessLogs`` to the operator's access-log port (its Pod IP, port 8082) at
  ``--rate`` entries/s for ``--duration`` s, every entry a host not learned before, spread over the
  fences; the ServiceFence and Sidecar writes (watch events, and the operator's ``slime_api_writes_total``)
  per fence per second until every host is in its fence's status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from bench.cluster import percentiles
from slime.devtools import workloads
from slime.devtools.xdscheck import cluster_names
from slime.meshbed import LAZYLOAD_PORT, MeshBed

RESULTS = Path(__file__).resolve().parent / "results" / "lazyload.json"
REPO = Path(__file__).resolve().parents[1]
PHASES = ("learning", "reduction", "writes")
FENCED = "slime.io/serviceFenced"
PORT = LAZYLOAD_PORT
NS_CALLER, NS_DEPS, NS_MANY, NS_LOAD = "lzb", "lzb-deps", "lzb-many", "lzb-load"
FENCES = ("microservice.slime.io", "v1alpha1", "servicefences")
SIDECARS = ("networking.istio.io", "v1alpha3", "sidecars")
OPERATOR_NS, ALS_PORT, METRICS_PORT = "mesh-operator", 8082, 9090
FORWARDER_NODE = "sidecar~10.244.99.250~global-sidecar-bench.mesh-operator~mesh-operator.svc.cluster.local"
CALL = """import json, time, urllib.error, urllib.request
t = time.time()
try:
    with urllib.request.urlopen({url!r}, timeout=30) as r:
        r.read()
        code = r.status
except urllib.error.HTTPError as e:
    code = e.code
except Exception as e:
    code = repr(e)
print(json.dumps({{"sent": t, "done": time.time(), "code": code}}))
"""


class BenchBed(MeshBed):
    """The bed with a longer ``dependencyTTL``."""

    def __init__(self, ttl: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl = ttl

    def operator_config(self) -> list[dict[str, Any]]:
        config = super().operator_config()
        for module in config:
            if module.get("kind") == "lazyload":
                module["general"]["dependencyTTL"] = f"{self.ttl:g}s"
        return config


# ------------------------------------------------------------------------------------------- helpers


class History:
    """Every watch event of one custom resource kind in one namespace, stamped with ``time.time()``
    on arrival (a daemon thread)."""

    def __init__(self, api: Any, gvp: tuple[str, str, str], namespace: str) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.gvp, self.namespace = gvp, namespace
        self.cond = threading.Condition()
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []  # (at, type, name, object)
        self.current: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._rv = self._list()
        threading.Thread(target=self._run, name=f"history-{gvp[2]}", daemon=True).start()

    def _list(self) -> str:
        listed: Any = self.custom.list_namespaced_custom_object(*self.gvp[:2], self.namespace, self.gvp[2])
        with self.cond:
            self.current = {o["metadata"]["name"]: o for o in listed["items"]}
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                w = k8s_watch.Watch()
                for ev in w.stream(self.custom.list_namespaced_custom_object, *self.gvp[:2], self.namespace,
                                   self.gvp[2], resource_version=self._rv, timeout_seconds=120):
                    at = time.time()
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        self._rv = self._list()
                        break
                    self._rv = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"]["name"]
                    with self.cond:
                        self.events.append((at, ev["type"], name, obj))
                        if ev["type"] == "DELETED":
                            self.current.pop(name, None)
                        else:
                            self.current[name] = obj
                        self.cond.notify_all()
                    if self._stop.is_set():
                        w.stop()
            except Exception:  # noqa: BLE001 - a broken watch is started again from a fresh list
                if not self._stop.is_set():
                    time.sleep(0.5)
                    with contextlib.suppress(Exception):
                        self._rv = self._list()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def first(self, name: str, match: Callable[[dict[str, Any]], bool], since: int, timeout: float) -> float | None:
        """The arrival time of the first event of ``name`` at or after index ``since`` whose object matches."""
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.events):
                    at, kind, n, obj = self.events[i]
                    i += 1
                    if n == name and kind != "DELETED" and match(obj):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait(self, check: Callable[[dict[str, dict[str, Any]]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not check(self.current):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what}: not within {timeout:g}s")
                self.cond.wait(min(left, 1.0))

    def stop(self) -> None:
        self._stop.set()


def sidecar_hosts(obj: dict[str, Any] | None) -> list[str]:
    egress = ((obj or {}).get("spec") or {}).get("egress") or [{}]
    return list(egress[0].get("hosts") or [])


def fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def host_key(host: str) -> str:
    return f'{{destination_service="{host}"}}'


def ready(obj: dict[str, Any] | None) -> bool:
    status = (obj or {}).get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def get_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


def get_bytes(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data


_SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(url: str) -> dict[str, float]:
    """Prometheus text: series (name + labels as written) -> value."""
    out: dict[str, float] = {}
    for line in get_text(url).splitlines():
        m = _SERIES.match(line)
        if m and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def total(metrics: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s series carrying every given label value."""
    out = 0.0
    for series, value in metrics.items():
        base, _, rest = series.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            out += value
    return out


def label_values(metrics: dict[str, float], name: str, label: str) -> set[str]:
    out = set()
    for series in metrics:
        base, _, rest = series.partition("{")
        m = re.search(rf'{label}="([^"]*)"', rest)
        if base == name and m:
            out.add(m.group(1))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def istiod_process(bed: MeshBed) -> tuple[int, str]:
    """istiod's pid and its monitoring URL (``--monitoringAddr`` of its command line)."""
    proc = getattr(bed.istiod, "_proc", None)
    if proc is None:
        raise RuntimeError("istiod is not running")
    argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode().split("\0")
    addr = next(a.partition("=")[2] for a in argv if a.startswith("--monitoringAddr="))
    return int(proc.pid), f"http://{addr}/metrics"


def label_fenced(bed: MeshBed, namespace: str) -> None:
    bed.ensure_namespace(namespace)
    # a label of its own field manager (the bed's server-side applies of the namespace would drop it)
    bed.kubectl("label", "namespace", namespace, f"{FENCED}=true", "--overwrite")


def operator_pod(bed: MeshBed) -> str:
    return bed.wait_pods(OPERATOR_NS, "app.kubernetes.io/name=slime", 1)[0].ip


def set_fence_enable(api: Any, namespace: str, name: str, enable: bool) -> None:
    k8s.CustomObjectsApi(api).patch_namespaced_custom_object(*FENCES[:2], namespace, FENCES[2], name,
                                                             {"spec": {"enable": enable}})


def als_message(entries: list[tuple[str, str]], first: bool) -> Any:
    """One ``StreamAccessLogsMessage`` as the global-sidecar's forwarder sends it: (caller IP, authority)
    pairs, upstream cluster ``original_dst`` (a call it forwarded); the identifier on a stream's first."""
    from envoy.service.accesslog.v3 import als_pb2

    message = als_pb2.StreamAccessLogsMessage()
    if first:
        message.identifier.node.id = FORWARDER_NODE
        message.identifier.log_name = "lazyload_global_sidecar"
    for i, (ip, authority) in enumerate(entries):
        entry = message.http_logs.log_entry.add()
        entry.common_properties.downstream_direct_remote_address.socket_address.address = ip
        entry.common_properties.downstream_direct_remote_address.socket_address.port_value = 40000 + i % 20000
        entry.common_properties.upstream_cluster = "original_dst"
        entry.request.authority = authority
        entry.response.response_code.value = 200
    return message


def send_als(target: str, batches: Iterator[list[tuple[str, str]]]) -> None:
    """One stream of access-log messages (one per batch) to ``target`` (ip:port), until the batches end."""
    import grpc
    from envoy.service.accesslog.v3 import als_pb2_grpc

    def messages() -> Iterator[Any]:
        for i, batch in enumerate(batches):
            yield als_message(batch, i == 0)

    with grpc.insecure_channel(target) as channel:
        als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(messages(), timeout=600)


def create_many(api: Any, objects: list[dict[str, Any]], threads: int = 8) -> None:
    core: Any = k8s.CoreV1Api(api)

    def create(obj: dict[str, Any]) -> None:
        try:
            core.create_namespaced_service(obj["metadata"]["namespace"], obj)
        except ApiException as e:
            if e.status != 409:
                raise

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, objects))


def wait_fence(fences: History, sidecars: History, name: str, timeout: float = 90.0) -> None:
    fences.wait(lambda cur: ready(cur.get(name)), timeout, f"the auto-created fence {name}")
    sidecars.wait(lambda cur: name in cur, timeout, f"the Sidecar {name}")


def has_cluster(ip: str, cluster: str) -> bool:
    """Is ``cluster`` in Envoy's CDS config (active or warming)? Only the clusters section is fetched."""
    needle = f'"{cluster}"'.encode()
    return any(needle in get_bytes(f"http://{ip}:15000/config_dump?resource={r}", 5)
               for r in ("dynamic_active_clusters", "dynamic_warming_clusters"))


def fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "–"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    return f"{v:,.0f}"


# ------------------------------------------------------------------------------------------- phases


def phase_learning(bed: MeshBed, n: int) -> dict[str, Any]:
    api = bed.api
    label_fenced(bed, NS_CALLER)
    bed.ensure_namespace(NS_DEPS)
    names = ["dep-warmup"] + [f"dep-{i:02d}" for i in range(n)]
    bed.apply([workloads.app_deployment("backend", NS_DEPS, app_image=bed._images.testapp.name, proxy_image=None,
                                        xds_address=bed.xds_address, port=PORT)]
              + [workloads.service(name, NS_DEPS, PORT, selector={"app": "backend"}) for name in names])
    sidecars = History(api, SIDECARS, NS_CALLER)
    fences = History(api, FENCES, NS_CALLER)
    try:
        caller = bed.deploy_app("caller", NS_CALLER, port=PORT)
        bed.wait_pods(NS_DEPS, "app=backend", 1)
        wait_fence(fences, sidecars, "caller")
        pod = caller.pods[0]
        proxy = bed.proxy(pod)
        proxy.wait_accepted(applied=lambda d: any("global-sidecar" in c for c in cluster_names(d)), timeout=90)
        bed.wait_pods(OPERATOR_NS, "app=global-sidecar", 1)
        rows = []
        for name in names:
            host = fqdn(name, NS_DEPS)
            cluster = f"outbound|{PORT}||{host}"
            mark = sidecars.mark()
            seen: dict[str, float] = {}
            stop = threading.Event()

            def poll(cluster: str = cluster, seen: dict[str, float] = seen, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    with contextlib.suppress(OSError, ValueError):
                        if has_cluster(pod.ip, cluster):
                            seen["at"] = time.time()
                            return
                    time.sleep(0.025)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            for _attempt in range(20 if name == names[0] else 1):  # the warm-up: until the detour works
                try:
                    out = bed.kubectl("exec", "-n", pod.namespace, pod.name, "-c", "app", "--", "python3", "-c",
                                      CALL.format(url=f"http://{name}.{NS_DEPS}:{PORT}/"), timeout=60)
                    call = json.loads(out.strip().splitlines()[-1])
                except Exception as e:  # noqa: BLE001 - counted as a failed call
                    call = {"sent": time.time(), "done": time.time(), "code": repr(e)[:200]}
                if call["code"] == 200:
                    break
                time.sleep(1)
            def listed(obj: dict[str, Any], host: str = host) -> bool:
                return f"*/{host}" in sidecar_hosts(obj)

            in_sidecar = sidecars.first("caller", listed, mark, 30)
            poller.join(30)
            stop.set()
            row = {"service": name, "code": call["code"], "call_s": call["done"] - call["sent"],
                   "sidecar_s": None if in_sidecar is None else in_sidecar - call["sent"],
                   "envoy_s": seen["at"] - call["sent"] if "at" in seen else None}
            rows.append(row)
            print(f"  {name}: call {row['code']} in {fmt(row['call_s'])}, Sidecar {fmt(row['sidecar_s'])}, "
                  f"Envoy {fmt(row['envoy_s'])}", flush=True)
            time.sleep(0.5)
        measured = rows[1:]  # the warm-up call also opens the global-sidecar's access-log stream
        return {
            "deps": n, "warmup": rows[0], "calls": measured,
            "call": percentiles([r["call_s"] for r in measured]),
            "sidecar": percentiles([r["sidecar_s"] for r in measured if r["sidecar_s"] is not None]),
            "envoy": percentiles([r["envoy_s"] for r in measured if r["envoy_s"] is not None]),
            "missed": sum(1 for r in measured if r["sidecar_s"] is None or r["envoy_s"] is None),
            "failed_calls": sum(1 for r in measured if r["code"] != 200),
        }
    finally:
        sidecars.stop()
        fences.stop()


def push_cost(bed: MeshBed, service: str, changes: int, gap: float, idle_cpu_per_s: float) -> dict[str, Any]:
    """``changes`` label changes of ``service`` ``gap`` s apart: istiod's deltas."""
    pid, mon = istiod_process(bed)
    core = k8s.CoreV1Api(bed.api)
    m0, c0, t0 = scrape(mon), cpu_seconds(pid), time.monotonic()
    for k in range(changes):
        rev = f"{time.time_ns()}-{k}"
        core.patch_namespaced_service(service, NS_MANY, {"metadata": {"labels": {"bench-rev": rev}}})
        time.sleep(gap)
    m1, c1, t1 = scrape(mon), cpu_seconds(pid), time.monotonic()

    def delta(name: str, **labels: str) -> float:
        return total(m1, name, **labels) - total(m0, name, **labels)

    types = sorted(label_values(m1, "pilot_xds_pushes", "type"))
    pushes = {t: delta("pilot_xds_pushes", type=t) for t in types}
    conv_n = delta("pilot_proxy_convergence_time_count")
    push_n = delta("pilot_xds_push_time_count")
    cfg_n = delta("pilot_xds_config_size_bytes_count")
    cpu = (c1 - c0) - idle_cpu_per_s * (t1 - t0)
    return {
        "changes": changes, "window_s": t1 - t0, "cpu_s": c1 - c0, "cpu_s_minus_idle": cpu,
        "cpu_ms_per_change": cpu / changes * 1000,
        "pushes": pushes, "pushes_per_change": sum(pushes.values()) / changes,
        "convergence_mean_s": delta("pilot_proxy_convergence_time_sum") / conv_n if conv_n else None,
        "convergence_n": conv_n,
        "push_time_mean_s": delta("pilot_xds_push_time_sum") / push_n if push_n else None,
        "push_time_n": push_n,
        "config_bytes_pushed": delta("pilot_xds_config_size_bytes_sum"), "config_pushes": cfg_n,
        "triggers": {t: delta("pilot_push_triggers", type=t) for t in sorted(label_values(m1, "pilot_push_triggers",
                                                                                           "type"))},
    }


def wait_settled(proxy: Any, more_than: int, timeout: float) -> int:
    """Wait until the proxy has more than ``more_than`` clusters, accepted, and their count held for 3 s."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        n = len(cluster_names(proxy.wait_accepted(timeout=max(1.0, deadline - time.monotonic()))))
        if n > more_than and n == last:
            return n
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proxy.proxy_id}: {n} clusters, not settled above {more_than}")
        last = n
        time.sleep(3)


def envoy_view(bed: MeshBed, pod: Any) -> dict[str, Any]:
    raw = get_bytes(f"http://{pod.ip}:15000/config_dump")
    dump = json.loads(raw)
    stats = bed.proxy(pod).stats()
    names = cluster_names(dump)
    return {"clusters": len(names), "outbound_clusters": sum(1 for n in names if n.startswith("outbound|")),
            "config_dump_bytes": len(raw),
            "memory_allocated": stats.get("server.memory_allocated")}


def phase_reduction(bed: MeshBed, services: int, fanout: int, changes: int, gap: float) -> dict[str, Any]:
    api = bed.api
    label_fenced(bed, NS_CALLER)
    bed.ensure_namespace(NS_MANY)
    pid, _ = istiod_process(bed)
    t = time.monotonic()
    c = cpu_seconds(pid)
    create_many(api, [workloads.service(f"svc-{i:04d}", NS_MANY, PORT, selector={"app": f"svc-{i:04d}"},
                                        cluster_ip="None") for i in range(services)])
    created_s = time.monotonic() - t
    print(f"  {services} headless Services created in {created_s:.1f}s", flush=True)
    sidecars = History(api, SIDECARS, NS_CALLER)
    fences = History(api, FENCES, NS_CALLER)
    try:
        app = bed.deploy_app("fanout", NS_CALLER, port=PORT)
        pod = app.pods[0]
        proxy = bed.proxy(pod)
        wait_fence(fences, sidecars, "fanout")
        picks = [f"svc-{i * services // fanout:04d}" for i in range(fanout)]
        hosts = [fqdn(p, NS_MANY) for p in picks]
        target = f"{operator_pod(bed)}:{ALS_PORT}"
        for attempt in range(12):  # sent again if the operator did not know the caller's IP yet
            send_als(target, iter([[(pod.ip, f"{h}:{PORT}") for h in hosts]]))
            try:
                sidecars.wait(lambda cur: all(f"*/{h}" in sidecar_hosts(cur.get("fanout")) for h in hosts), 5,
                              "the fan-out in the Sidecar")
                break
            except TimeoutError:
                if attempt == 11:
                    raise
        wanted = {f"outbound|{PORT}||{h}" for h in hosts}
        proxy.wait_accepted(applied=lambda d: wanted <= cluster_names(d), timeout=120)
        istiod_setup_cpu = cpu_seconds(pid) - c
        time.sleep(3)
        idle_c, idle_t = cpu_seconds(pid), time.monotonic()
        time.sleep(10)
        idle = (cpu_seconds(pid) - idle_c) / (time.monotonic() - idle_t)
        changed = f"svc-{services - 1:04d}"
        out: dict[str, Any] = {"services": services, "fanout": fanout, "fanout_hosts": hosts,
                               "changed_service": changed, "services_created_s": created_s,
                               "istiod_cpu_s_setup": istiod_setup_cpu, "istiod_idle_cpu_per_s": idle}
        with_sc = envoy_view(bed, pod)
        with_sc["sidecar_hosts"] = len(sidecar_hosts(sidecars.current.get("fanout")))
        print(f"  with its Sidecar: {with_sc}", flush=True)
        with_sc["push"] = push_cost(bed, changed, changes, gap, idle)
        print(f"  push, with: {with_sc['push']}", flush=True)

        set_fence_enable(api, NS_CALLER, "fanout", False)
        sidecars.wait(lambda cur: "fanout" not in cur, 60, "the Sidecar removed")
        wait_settled(proxy, more_than=with_sc["clusters"], timeout=180)
        without = envoy_view(bed, pod)
        print(f"  without a Sidecar: {without}", flush=True)
        without["push"] = push_cost(bed, changed, changes, gap, idle)
        print(f"  push, without: {without['push']}", flush=True)
        set_fence_enable(api, NS_CALLER, "fanout", True)
        sidecars.wait(lambda cur: "fanout" in cur, 60, "the Sidecar back")
        out["with_sidecar"], out["without_sidecar"] = with_sc, without
        out["cluster_reduction"] = without["clusters"] / max(1, with_sc["clusters"])
        out["bytes_reduction"] = without["config_dump_bytes"] / max(1, with_sc["config_dump_bytes"])
        return out
    finally:
        sidecars.stop()
        fences.stop()


def operator_pid() -> int | None:
    """The operator's process as this host sees it (its Pod shares our kernel)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if b"/etc/slime/config.yaml" in argv and b"--modules" in argv:
                return int(cmdline.parent.name)
    return None


def fence_reconciles(ip: str) -> dict[str, float]:
    m = scrape(f"http://{ip}:{METRICS_PORT}/metrics")
    return {"evaluations": total(m, "slime_reconciles_total", kind="ServiceFence"),
            "errors": total(m, "slime_reconcile_errors_total", kind="ServiceFence"),
            "seconds": total(m, "slime_reconcile_duration_seconds_sum", kind="ServiceFence")}


def operator_writes(ip: str) -> dict[str, float]:
    m = scrape(f"http://{ip}:{METRICS_PORT}/metrics")
    return {f"{kind} {verb}": total(m, "slime_api_writes_total", kind=kind, verb=verb)
            for kind in label_values(m, "slime_api_writes_total", "kind")
            for verb in label_values(m, "slime_api_writes_total", "verb")
            if total(m, "slime_api_writes_total", kind=kind, verb=verb)}


def max_in_window(times: list[float], window: float = 1.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def phase_writes(bed: MeshBed, nfences: int, rate: float, duration: float, streams: int,
                 flush: float = 0.2) -> dict[str, Any]:
    api = bed.api
    label_fenced(bed, NS_LOAD)
    names = [f"load-{i}" for i in range(nfences)]
    bed.apply([o for name in names for o in (
        workloads.app_deployment(name, NS_LOAD, app_image=bed._images.testapp.name, proxy_image=None,
                                 xds_address=bed.xds_address, port=PORT),
        workloads.service(name, NS_LOAD, PORT))])
    sidecars = History(api, SIDECARS, NS_LOAD)
    fences = History(api, FENCES, NS_LOAD)
    try:
        ips = [bed.wait_pods(NS_LOAD, f"app={name}", 1)[0].ip for name in names]
        for name in names:
            wait_fence(fences, sidecars, name)
        op_ip = operator_pod(bed)
        time.sleep(3)  # the operator's IP index is refreshed every 2 s
        w0, r0 = operator_writes(op_ip), fence_reconciles(op_ip)
        pid = operator_pid()
        cpu0 = cpu_seconds(pid) if pid else 0.0
        per_message = max(1, round(rate * flush / streams))
        ticks = int(duration / flush)
        sent = [0] * streams
        start = time.time()

        def batches(s: int) -> Iterator[list[tuple[str, str]]]:
            t0 = time.monotonic()
            for tick in range(ticks):
                delay = t0 + tick * flush - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                batch = []
                for j in range(per_message):
                    n = (tick * per_message + j) * streams + s
                    batch.append((ips[n % nfences], f"h{n:06d}.lzb-ext.svc.cluster.local:{PORT}"))
                sent[s] += len(batch)
                yield batch

        target = f"{op_ip}:{ALS_PORT}"
        threads = [threading.Thread(target=send_als, args=(target, batches(s)), daemon=True) for s in range(streams)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(duration + 120)
        sent_end = time.time()
        expected: dict[str, set[str]] = {name: set() for name in names}
        for s in range(streams):
            for tick in range(ticks):
                for j in range(per_message):
                    n = (tick * per_message + j) * streams + s
                    expected[names[n % nfences]].add(host_key(f"h{n:06d}.lzb-ext.svc.cluster.local"))

        def learned_all(cur: dict[str, dict[str, Any]]) -> bool:
            return all(expected[n] <= set(((cur.get(n) or {}).get("status") or {}).get("metricStatus") or {})
                       for n in names)

        learned_ok = True
        try:
            fences.wait(learned_all, 60, "every host in its fence's status")
        except TimeoutError:
            learned_ok = False
        learned_at = time.time()
        # the Sidecars follow their fences' renders: give them the same chance
        with contextlib.suppress(TimeoutError):
            sidecars.wait(lambda cur: all(len(sidecar_hosts(cur.get(n))) >= len(expected[n]) for n in names), 30,
                          "every host in its Sidecar")
        time.sleep(2)
        w1, r1 = operator_writes(op_ip), fence_reconciles(op_ip)
        cpu1 = cpu_seconds(pid) if pid else 0.0
        # from the first entry to the write that completed the learning (else: to the last write seen)
        last_write = max((at for at, kind, _, _ in fences.events if kind == "MODIFIED" and at >= start),
                         default=sent_end)
        span = (learned_at if learned_ok else max(sent_end, last_write)) - start
        per_fence = {}
        for name in names:
            fw = sorted(at for at, kind, n, _ in fences.events if n == name and kind == "MODIFIED" and at >= start)
            timeline = [(round(at - start, 2), len((o.get("status") or {}).get("metricStatus") or {}))
                        for at, kind, n, o in fences.events if n == name and kind == "MODIFIED" and at >= start]
            sw = sorted(at for at, kind, n, _ in sidecars.events if n == name and kind != "DELETED" and at >= start)
            per_fence[name] = {"fence_writes": len(fw), "sidecar_writes": len(sw),
                               "fence_per_s": len(fw) / span, "sidecar_per_s": len(sw) / span,
                               "fence_max_in_1s": max_in_window(fw), "sidecar_max_in_1s": max_in_window(sw),
                               "hosts_learned": len(expected[name] & set(
                                   ((fences.current.get(name) or {}).get("status") or {}).get("metricStatus") or {})),
                               "hosts_sent": len(expected[name]), "timeline": timeline}
        return {
            "fences": nfences, "rate": rate, "duration": duration, "streams": streams,
            "entries_sent": sum(sent), "send_s": sent_end - start, "all_learned": learned_ok,
            "learned_after_send_s": learned_at - sent_end, "span_s": span, "per_fence": per_fence,
            "fence_writes_per_fence_per_s": max(f["fence_per_s"] for f in per_fence.values()),
            "sidecar_writes_per_fence_per_s": max(f["sidecar_per_s"] for f in per_fence.values()),
            "max_fence_writes_in_1s": max(f["fence_max_in_1s"] for f in per_fence.values()),
            "max_sidecar_writes_in_1s": max(f["sidecar_max_in_1s"] for f in per_fence.values()),
            "operator_writes": {k: w1.get(k, 0) - w0.get(k, 0) for k in sorted({*w0, *w1})
                                if w1.get(k, 0) - w0.get(k, 0)},
            "fence_evaluations": {k: r1[k] - r0[k] for k in r0}, "operator_cpu_s": cpu1 - cpu0 if pid else None,
            "operator_log_tail": bed.kubectl("logs", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=slime",
                                             "--tail", "30").splitlines(),
        }
    finally:
        sidecars.stop()
        fences.stop()


# ------------------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if (lr := results.get("learning")) and "sidecar" in lr:
        s, e, c = lr["sidecar"], lr["envoy"], lr["call"]
        rows.append((f"first call (detour via the global-sidecar), {lr['deps']} deps",
                     f"p50 {fmt(c.get('p50'))}, p99 {fmt(c.get('p99'))}, max {fmt(c.get('max'))}", "–"))
        rows.append(("first call → host in the caller's Sidecar",
                     f"p50 {fmt(s.get('p50'))}, p99 {fmt(s.get('p99'))}, max {fmt(s.get('max'))}",
                     "p99 ≤ 1 s: " + ("met" if s.get("p99", 99) <= 1 else "MISSED")))
        rows.append(("first call → cluster in the caller's Envoy",
                     f"p50 {fmt(e.get('p50'))}, p99 {fmt(e.get('p99'))}, max {fmt(e.get('max'))}", "–"))
        if lr["missed"] or lr["failed_calls"]:
            rows.append(("  not seen / failed calls", f"{lr['missed']} / {lr['failed_calls']}", ""))
    if (rd := results.get("reduction")) and "with_sidecar" in rd:
        w, wo = rd["with_sidecar"], rd["without_sidecar"]
        rows.append((f"caller's clusters, {rd['services']} Services, fan-out {rd['fanout']}",
                     f"{w['clusters']} with its Sidecar vs {wo['clusters']} without "
                     f"({rd['cluster_reduction']:.0f}× fewer)",
                     "≥ 100×: " + ("met" if rd["cluster_reduction"] >= 100 else "MISSED")))
        rows.append(("  of which outbound|… (Services)", f"{w['outbound_clusters']} vs {wo['outbound_clusters']} "
                     f"({wo['outbound_clusters'] / max(1, w['outbound_clusters']):.0f}× fewer)", ""))
        rows.append(("caller's /config_dump bytes", f"{w['config_dump_bytes']:,} vs {wo['config_dump_bytes']:,} "
                     f"({rd['bytes_reduction']:.0f}× fewer)", "–"))
        if w.get("memory_allocated") and wo.get("memory_allocated"):
            rows.append(("caller's Envoy memory_allocated", f"{w['memory_allocated'] / 2**20:.1f} MiB vs "
                         f"{wo['memory_allocated'] / 2**20:.1f} MiB", "–"))
        wp, wop = w["push"], wo["push"]
        rows.append((f"istiod per change of one other Service ({wp['changes']} changes)",
                     f"pushes {wp['pushes_per_change']:.1f} vs {wop['pushes_per_change']:.1f}; CPU "
                     f"{wp['cpu_ms_per_change']:.0f} vs {wop['cpu_ms_per_change']:.0f} ms", "–"))
        rows.append(("istiod push time / convergence (mean)",
                     f"{fmt(wp['push_time_mean_s'])} / {fmt(wp['convergence_mean_s'])} vs "
                     f"{fmt(wop['push_time_mean_s'])} / {fmt(wop['convergence_mean_s'])}", "–"))
        rows.append(("istiod config bytes pushed per change", f"{wp['config_bytes_pushed'] / wp['changes']:,.0f} vs "
                     f"{wop['config_bytes_pushed'] / wop['changes']:,.0f}", "–"))
    if (wr := results.get("writes")) and "per_fence" in wr:
        rows.append((f"writes, {wr['entries_sent']:,} new hosts in {wr['send_s']:.1f}s over {wr['fences']} fences",
                     f"ServiceFence {wr['fence_writes_per_fence_per_s']:.2f}/s, Sidecar "
                     f"{wr['sidecar_writes_per_fence_per_s']:.2f}/s per fence (worst fence; max in any 1 s: "
                     f"{wr['max_fence_writes_in_1s']} / {wr['max_sidecar_writes_in_1s']})",
                     "≤ 1/s: " + ("met" if wr["fence_writes_per_fence_per_s"] <= 1
                                  and wr["sidecar_writes_per_fence_per_s"] <= 1 else "MISSED")))
        rows.append(("  all hosts learned", f"{wr['all_learned']}, {fmt(wr['learned_after_send_s'])} after the "
                     f"last entry; operator writes {wr['operator_writes']}", ""))
    width = max((len(r[0]) for r in rows), default=10)
    print("\n" + "what".ljust(width) + " | measured | target")
    for what, measured, target in rows:
        print(f"{what.ljust(width)} | {measured} | {target}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lazyload", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=PHASES, help="run only these phases (repeatable)")
    p.add_argument("--deps", type=int, default=20, help="learning: new dependencies called (default 20)")
    p.add_argument("--services", type=int, default=1000, help="reduction: headless Services (default 1000)")
    p.add_argument("--fanout", type=int, default=5, help="reduction: the caller's learned dependencies (default 5)")
    p.add_argument("--changes", type=int, default=10, help="reduction: Service changes per state (default 10)")
    p.add_argument("--gap", type=float, default=2.0, help="reduction: seconds between changes (default 2)")
    p.add_argument("--fences", type=int, default=4, help="writes: fences the hosts spread over (default 4)")
    p.add_argument("--rate", type=float, default=1000.0, help="writes: access-log entries/s (default 1000)")
    p.add_argument("--duration", type=float, default=10.0, help="writes: seconds of entries (default 10)")
    p.add_argument("--streams", type=int, default=2, help="writes: gRPC streams (default 2)")
    p.add_argument("--ttl", type=float, default=600.0, help="lazyload dependencyTTL on the bed, s (default 600)")
    args = p.parse_args(argv)
    phases = args.only or list(PHASES)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    results: dict[str, Any] = {"commit": commit, "cpus": os.cpu_count(), "machine": platform.machine(),
                               "args": vars(args), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t = time.monotonic()
    with BenchBed(args.ttl) as bed:
        results["bed_start_s"] = time.monotonic() - t
        print(f"mesh bed up in {results['bed_start_s']:.0f}s", flush=True)
        for phase in phases:
            print(f"\n== {phase}", flush=True)
            t = time.monotonic()
            try:
                if phase == "learning":
                    results[phase] = phase_learning(bed, args.deps)
                elif phase == "reduction":
                    results[phase] = phase_reduction(bed, args.services, args.fanout, args.changes, args.gap)
                else:
                    results[phase] = phase_writes(bed, args.fences, args.rate, args.duration, args.streams)
            except Exception as e:  # noqa: BLE001 - the other phases still run; the failure is reported
                print(f"  {phase} failed: {e!r}", flush=True)
                results[phase] = {"error": repr(e)}
            results[phase]["phase_s"] = time.monotonic() - t
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results, indent=1, default=str))
    report(results)
    print(f"\nwritten: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
