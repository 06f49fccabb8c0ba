"""``make demo`` on the mesh test bed (``slime.meshbed``): the product as users run it.

The operator runs in its Pod from ``deploy/slime.yaml`` next to a real istiod; the samples of the
limiter, plugin and lazyload modules (``samples/<module>/``) are applied as a user would; each
Service they define gets real app Pods with Envoy sidecars (a DestinationRule's subsets one
Deployment each), instead of the fake Pods of ``context/``; a client Pod sends requests to every
Service, a round every few seconds; and the live view shows, per Service, how many requests got
200 and how many 429 (the rate limits the operator wrote, pushed by istiod, enforced by Envoy),
next to every Slime object's Ready condition and what the modules wrote. The exported CPU of the
adaptive sample's Pods crosses its threshold back and forth, so its limit comes and goes.

The global limit sample is left out (no rate limit service runs on the bed), and so are boot's:
they would deploy a second copy of each module, acting on the same objects as the operator already
running (``tests/e2e/test_boot.py`` runs SlimeBoots on the bed).
:class:`BedDemo` works on any started bed (``tests/e2e/test_demo.py`` runs it on the shared one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slime.demo import (
    ADAPTIVE,
    CPU_HIGH,
    CPU_LOW,
    CPU_THRESHOLD,
    FLIP_EVERY,
    NAMESPACE,
    REFRESH_EVERY,
    SAMPLES,
    SETTLE_TIMEOUT,
    DemoError,
    _table,
    documents,
    not_ready,
    settled,
    show_state,
)
from slime.devtools import workloads
from slime.framework.kube import Kube
from slime.framework.runtime import api_client
from slime.meshbed import MeshBed

MODULES = ("limiter", "plugin", "lazyload")
PORT = 9080
REPLICAS = {"ratings": 2}  # its sample's quota is 100/{{._base.pod}}: shared by two Pods
# requests per round, sent all at once (default 5)
BURST = {"productpage": 40, "reviews": 15, "catalog": 15, "ratings": 10}
HEADERS = {"user": "alice"}  # what the reviews sample limits
LEFT_OUT = {"limiter/global-rls.yaml": "a global limit needs a rate limit service (RLS), which the bed does not "
                                       "run (`python -m slime.demo --dev-cluster` and `slime render` show its output)"}
ALWAYS_LIMITED = "reviews"  # limited whatever the metric: --once waits to see its 429s


@dataclass
class Counts:
    last: list[int] = field(default_factory=list)
    total: dict[int, int] = field(default_factory=dict)

    def add(self, codes: list[int]) -> None:
        self.last = codes
        for code in codes:
            self.total[code] = self.total.get(code, 0) + 1


def _summary(codes: list[int]) -> str:
    counts: dict[int, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return " ".join(f"{n}x{code or 'err'}" for code, n in sorted(counts.items())) or "-"


class BedDemo:
    """The demo's workloads and view on a started bed. ``setup``, then ``round`` and ``screen``."""

    def __init__(self, bed: MeshBed, say: Callable[[str], None] = print) -> None:
        self.bed = bed
        self.say = say
        self.kube = Kube(api_client(str(bed.kubeconfig)))
        self.cpu = CPU_LOW
        self.counts: dict[str, Counts] = {}
        self.services: list[str] = []

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self, cpu: float) -> None:
        if not SAMPLES.is_dir():
            raise DemoError(f"the samples are not here ({SAMPLES}): run the demo from a source checkout")
        t = time.monotonic()
        files = [p for m in MODULES for p in sorted((SAMPLES / m).glob("*.yaml"))
                 if f"{m}/{p.name}" not in LEFT_OUT]
        for path in files:
            self.bed.kubectl("apply", "-f", str(path))
        self.say(f"Applied samples/{{{','.join(MODULES)}}}/ (boot's would run a second copy of each module), "
                 + "but " + "; ".join(f"{name}: {why}" for name, why in LEFT_OUT.items()))
        objects = [o for p in files for o in documents(p)]
        deployments = self.app_deployments(objects)
        self.bed.apply(deployments)
        self.services = sorted({d["spec"]["selector"]["matchLabels"]["app"] for d in deployments})
        client = self.bed.client(NAMESPACE)
        for dep in deployments:
            labels = dep["spec"]["selector"]["matchLabels"]
            self.bed.wait_pods(NAMESPACE, ",".join(f"{k}={v}" for k, v in labels.items()), dep["spec"]["replicas"])
        self.client = client
        self.set_cpu(cpu)
        self.say(f"{len(deployments)} app Deployments with sidecars ({', '.join(self.services)}) and a client Pod "
                 f"ready in {time.monotonic() - t:.0f}s")

    def app_deployments(self, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """An echo server with a sidecar for every Service of the samples in the demo namespace, one
        Deployment per DestinationRule subset."""
        images = self.bed.images
        assert images is not None
        subsets = {str(o["spec"].get("host", "")).split(".")[0]: o["spec"].get("subsets") or []
                   for o in objects if o.get("kind") == "DestinationRule"}
        out = []
        for svc in objects:
            meta = svc.get("metadata") or {}
            if svc.get("kind") != "Service" or meta.get("namespace") != NAMESPACE:
                continue
            app = str(((svc.get("spec") or {}).get("selector") or {}).get("app") or meta["name"])
            for subset in subsets.get(meta["name"]) or [None]:
                labels = dict(subset["labels"]) if subset else {}
                dep = workloads.app_deployment(app, NAMESPACE, app_image=images.testapp.name,
                                               proxy_image=images.proxy.name, xds_address=self.bed.xds_address,
                                               port=PORT, replicas=REPLICAS.get(app, 1), labels=labels)
                if subset:
                    dep["metadata"]["name"] = f"{app}-{subset['name']}"
                    dep["spec"]["selector"]["matchLabels"].update(labels)
                out.append(dep)
        return out

    def set_cpu(self, total: float) -> None:
        self.cpu = total
        if self.bed.exporter is None:
            return
        pods = self.bed.wait_pods(NAMESPACE, f"app={ADAPTIVE}", 1)
        for pod in pods:
            self.bed.exporter.set_cpu(NAMESPACE, pod.name, total / len(pods))

    def cleanup(self) -> None:
        """Delete what the demo applied (a shared bed goes on: the samples' SmartLimiter in istio-system too)."""
        for module in MODULES:
            with contextlib.suppress(Exception):
                self.bed.kubectl("delete", "-f", str(SAMPLES / module), "--ignore-not-found", "--wait=true",
                                 timeout=120)

    # -- while running ----------------------------------------------------------------------------

    def round(self) -> None:
        """One round of requests from the client Pod to every Service."""
        by_count: dict[int, list[str]] = {}
        for svc in self.services:
            by_count.setdefault(BURST.get(svc, 5), []).append(svc)
        for count, services in sorted(by_count.items()):
            urls = {f"http://{svc}:{PORT}/": svc for svc in services}
            for url, result in self.bed.http_get_many(self.client, list(urls), count, HEADERS,
                                                          parallel=count).items():
                self.counts.setdefault(urls[url], Counts()).add(result["codes"])

    def limited(self, service: str) -> bool:
        return self.counts.get(service, Counts()).total.get(429, 0) > 0

    def traffic(self) -> str:
        rows = []
        for svc in self.services:
            c = self.counts.get(svc, Counts())
            other = sum(n for code, n in c.total.items() if code not in (200, 429))
            rows.append([svc, _summary(c.last), str(c.total.get(200, 0)), str(c.total.get(429, 0)), str(other)])
        return _table(["SERVICE", "LAST ROUND", "TOTAL 200", "TOTAL 429", "OTHER"], rows)

    def header(self, next_flip: float | None) -> str:
        state = "above" if self.cpu > CPU_THRESHOLD else "below"
        text = (f"Requests from Pod {NAMESPACE}/{self.client.name} (header user: alice), one round every "
                f"{REFRESH_EVERY:g}s. Exported cpu.sum of {ADAPTIVE}: {self.cpu:g}, {state} its threshold "
                f"{CPU_THRESHOLD:g}: its limit is {'in force' if state == 'above' else 'off'}")
        if next_flip is not None:
            text += f" (moves in {max(0.0, next_flip - time.monotonic()):.0f}s)"
        return text

    def screen(self, next_flip: float | None) -> str:
        return f"{self.header(next_flip)}\n\n{self.traffic()}\n\n{show_state(self.kube)}"

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if settled(self.kube) and not not_ready(self.kube):
                return True
            time.sleep(1)
        return settled(self.kube) and not not_ready(self.kube)


def run_once(demo: BedDemo, timeout: float = SETTLE_TIMEOUT) -> int:
    """Set up, wait for every sample to be Ready and for the limits to show on real requests, print
    once. 1 when a sample is not Ready or no request was limited."""
    demo.setup(cpu=CPU_HIGH)
    t = time.monotonic()
    ok = demo.wait_settled(timeout)
    deadline = time.monotonic() + 60
    while ok and time.monotonic() < deadline:  # until istiod pushed the limits and Envoy enforces them
        demo.round()
        if demo.limited(ALWAYS_LIMITED) and demo.limited(ADAPTIVE):
            break
        time.sleep(1)
    demo.say(f"\n{demo.screen(None)}\n\nSettled and limiting in {time.monotonic() - t:.0f}s.")
    if not ok:
        demo.say(f"Not Ready after {timeout:g}s: {', '.join(not_ready(demo.kube)) or 'status not written'}")
        return 1
    missing = [s for s in (ALWAYS_LIMITED, ADAPTIVE) if not demo.limited(s)]
    if missing:
        demo.say(f"No request to {', '.join(missing)} was limited within 60s")
        return 1
    return 0


def run_forever(demo: BedDemo) -> None:
    import sys

    demo.setup(cpu=CPU_LOW)
    next_flip = time.monotonic() + FLIP_EVERY
    while True:
        if time.monotonic() >= next_flip:
            demo.set_cpu(CPU_HIGH if demo.cpu < CPU_THRESHOLD else CPU_LOW)
            next_flip = time.monotonic() + FLIP_EVERY
        started = time.monotonic()
        demo.round()
        screen = (f"{demo.screen(next_flip)}\n\nkubectl --kubeconfig {demo.bed.kubeconfig} get slime -A   "
                  "Ctrl-C stops the demo.")
        print("\033[H\033[2J" if sys.stdout.isatty() else "-" * 40, end="" if sys.stdout.isatty() else "\n")
        print(f"{time.strftime('%H:%M:%S')}  {screen}", flush=True)
        time.sleep(max(0.0, REFRESH_EVERY - (time.monotonic() - started)))


def bed_unavailable() -> str | None:
    """Why the bed cannot run here (None: it can)."""
    from slime.devtools import hostnet, images

    try:
        hostnet.preflight()
        images.preflight()
    except (hostnet.HostError, images.ImageError) as e:
        return str(e)
    return None


def main(once: bool) -> int:
    """The demo on a bed of its own, started and stopped here."""
    t = time.monotonic()
    print("Starting the mesh test bed (a node, istiod, the operator in its Pod)...", flush=True)
    with MeshBed() as bed:
        print("Bed up: " + ", ".join(f"{k} {v:.1f}s" for k, v in bed.timings.items()), flush=True)
        print(f"  kubectl --kubeconfig {bed.kubeconfig} get slime,envoyfilters,pods -A", flush=True)
        demo = BedDemo(bed)
        if once:
            code = run_once(demo)
            print(f"Demo took {time.monotonic() - t:.0f}s until now; stopping the bed...", flush=True)
            return code
        run_forever(demo)
    return 0
