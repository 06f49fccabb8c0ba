"""``make demo``: the product on a built-in local cluster, in one command.

With root and the mesh bed's tools (``make setup``), it runs on the real mesh test bed: the operator
in its Pod, real app Pods with sidecars, a client sending requests, and a live view of 200/429 per
Service (``slime.demobed``). Otherwise, or with ``--dev-cluster``, it runs as follows (one line says
why). It starts the local control plane (``slime.devcluster``), Prometheus scraping a small exporter of
made-up CPU values (when the prometheus binary exists), and ``slime run`` with every module and
the samples' module configs; applies every module's samples (``samples/<module>/``) with what a
cluster would add to them (``context/``: Pods, reported Running as a kubelet would; the metric
values of ``config/metrics.yaml``, exported for Prometheus); then shows every Slime object with its
Ready condition and every object the modules wrote, every few seconds, while the exported CPU of
the adaptive sample crosses its threshold back and forth. Ctrl-C stops everything. ``--once`` sets
up, prints the state once things settled, and tears down (exit 1 if a sample is not Ready).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes.client.exceptions import ApiException

from slime import registry
from slime.crds import crd_files
from slime.devcluster import DEFAULT_NAMESPACES, DevCluster, DevClusterError, istio_crds
from slime.devtools import die_with_parent, stop_process
from slime.devtools.prometheus import Exporter, free_port, prometheus_available, run_prometheus
from slime.framework import kinds
from slime.framework.kube import Kube
from slime.framework.runtime import api_client
from slime.framework.sync import MANAGED_BY

SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # only in a source checkout
KUBECONFIG_OUT = Path("slime-demo.kubeconfig")
NAMESPACE = "slime-samples"
# The adaptive sample is in force while its cpu.sum > 100 (samples/limiter/adaptive-cpu.yaml).
ADAPTIVE, CPU_THRESHOLD, CPU_LOW, CPU_HIGH = "productpage", 100.0, 40.0, 160.0
FLIP_EVERY = 20.0  # seconds between CPU moves
REFRESH_EVERY = 3.0  # seconds between screens
SETTLE_TIMEOUT = 120.0


class DemoError(RuntimeError):
    pass


def sample_modules() -> list[str]:
    return [m for m in registry.names() if (SAMPLES / m).is_dir()]


def module_configs(prometheus_url: str | None) -> list[dict[str, Any]]:
    """Each module's sample config (its Prometheus pointed at ours), or an enabled default."""
    out = []
    for module in registry.names():
        path = SAMPLES / module / "config" / f"{module}.yaml"
        cfg: dict[str, Any] = yaml.safe_load(path.read_text()) if path.exists() else {}
        cfg = {"name": module, "kind": module, **cfg, "enable": True}
        prometheus = (cfg.get("metric") or {}).get("prometheus")
        if prometheus is not None:
            if prometheus_url:
                prometheus["address"] = prometheus_url
            else:
                cfg.pop("metric")
        out.append(cfg)
    return out


def documents(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            out += doc.get("items") or [] if doc.get("kind") == "List" else [doc]
    return out


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def slime_objects(kube: Kube) -> list[dict[str, Any]]:
    """Every object of every module's kinds (a kind whose CRD the cluster lacks has none)."""
    out: list[dict[str, Any]] = []
    for info in registry.crd_infos():
        try:
            out += kube.list(info.kind_ref, None)
        except ApiException as e:
            if e.status != 404:
                raise
    return out


def written_objects(kube: Kube) -> list[dict[str, Any]]:
    """Every object a module wrote (children and module-level objects), found by slime's label."""
    kinds_ = {k.kind: k for m in registry.modules() for k in (*m.writes, *m.manages)}
    for m in registry.modules():
        if m.shared is not None:
            kinds_[m.shared.kind.kind] = m.shared.kind
    out = []
    for kind in kinds_.values():
        out += kube.list(kind, None, f"{MANAGED_BY}=slime")
    return out


def show_state(kube: Kube) -> str:
    rows = []
    for obj in slime_objects(kube):
        meta, ready = obj["metadata"], _condition(obj, "Ready")
        detail = ready.get("message") or ""
        metrics = (obj.get("status") or {}).get("metricStatus") or {}
        if metrics and obj["kind"] == "SmartLimiter":
            detail = " ".join(f"{k}={v}" for k, v in sorted(metrics.items())) + f"; {detail}"
        rows.append([obj["kind"], f"{meta['namespace']}/{meta['name']}",
                     f"{ready.get('status', '-')} ({ready.get('reason', '')})" if ready else "-", _short(detail)])
    written = []
    for obj in written_objects(kube):
        meta = obj["metadata"]
        owner = (meta.get("annotations") or {}).get("slime.io/owner") or "module"
        written.append([obj["kind"], f"{meta.get('namespace', '')}/{meta['name']}", owner])
    return "\n".join([
        _table(["KIND", "NAME", "READY", "DETAIL"], sorted(rows)) if rows else "No Slime objects.",
        "",
        _table(["WRITTEN", "NAME", "FOR"], sorted(written)) if written else "Nothing written yet.",
    ])


def settled(kube: Kube) -> bool:
    """Every Slime object has a Ready condition for its current generation."""
    objects = slime_objects(kube)
    return bool(objects) and all(
        _condition(o, "Ready") and (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
        for o in objects)


def not_ready(kube: Kube) -> list[str]:
    return [f"{o['kind']} {o['metadata']['namespace']}/{o['metadata']['name']}" for o in slime_objects(kube)
            if _condition(o, "Ready").get("status") != "True"]


class Demo:
    """Everything the demo starts, stopped in reverse order by one ExitStack."""

    def __init__(self, keep: bool, kubeconfig_out: Path) -> None:
        self.keep = keep
        self.kubeconfig_out = kubeconfig_out
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="slime-demo-"))
        self.exporter: Exporter | None = None
        self.cpu = CPU_LOW
        self.operator: subprocess.Popen[bytes] | None = None
        self.operator_log = self.workdir / "operator.log"

    def __enter__(self) -> Demo:
        self.stack.callback(self._remove_workdir)
        return self

    def __exit__(self, *exc: object) -> None:
        print("Stopping the demo...", flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        self.stack.close()

    def _remove_workdir(self) -> None:
        if self.keep:
            print(f"Logs and config kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self, cpu: float) -> None:
        if not SAMPLES.is_dir():
            raise DemoError(f"the samples are not here ({SAMPLES}): run the demo from a source checkout")
        self.cpu = cpu
        self.cluster = self._start_cluster()
        self.kube = Kube(api_client(str(self.cluster.kubeconfig)))
        prometheus_url = self._start_prometheus()
        self._apply_samples()
        self._start_operator(prometheus_url)

    def _start_cluster(self) -> DevCluster:
        print("Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...", flush=True)
        ours = crd_files()
        self.stack.callback(shutil.rmtree, ours[0].parent, True)
        cluster = self.stack.enter_context(DevCluster([*ours, istio_crds()], namespaces=list(DEFAULT_NAMESPACES)))
        if self.keep:  # runs before the cluster removes its directory
            self.stack.callback(shutil.copytree, cluster.workdir / "logs", self.workdir / "cluster-logs")
        shutil.copyfile(cluster.kubeconfig, self.kubeconfig_out)
        self.kubeconfig_out.chmod(0o600)
        if not self.keep:
            self.stack.callback(self.kubeconfig_out.unlink, True)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
        print(f"Cluster up at {cluster.server} ({phases}). Try, in another terminal:\n"
              f"  kubectl --kubeconfig {self.kubeconfig_out} get slime -A\n"
              f"  kubectl --kubeconfig {self.kubeconfig_out} -n {NAMESPACE} describe smartlimiter {ADAPTIVE}",
              flush=True)
        return cluster

    def _start_prometheus(self) -> str | None:
        if not prometheus_available():
            print("Prometheus not found (apt-get install prometheus): the adaptive sample will report its "
                  "metric missing.", flush=True)
            return None
        self.exporter = self.stack.enter_context(Exporter())
        url: str = self.stack.enter_context(run_prometheus([self.exporter.target], scrape_interval="1s"))
        print(f"Prometheus at {url}, scraping the demo exporter at {self.exporter.target}", flush=True)
        return url

    def _apply_samples(self) -> None:
        """Every module's samples as a user would apply them, then what the cluster would add: the
        context Pods reported Running (no kubelet here) and the other context objects."""
        for module in sample_modules():
            self.cluster.kubectl("apply", "-f", str(SAMPLES / module))
            print(f"Applied samples/{module}/", flush=True)
        for module in sample_modules():
            for path in sorted((SAMPLES / module / "context").glob("*.yaml")):
                for obj in documents(path):
                    status = obj.pop("status", None)
                    self.cluster.apply_yaml([obj])
                    if status and obj["kind"] == "Pod":
                        meta = obj["metadata"]
                        self.kube.merge_patch(kinds.POD, meta.get("namespace"), meta["name"], {"status": status},
                                              subresource="status")
        self.set_cpu(self.cpu)

    def _start_operator(self, prometheus_url: str | None) -> None:
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump_all(module_configs(prometheus_url), sort_keys=False))
        liveness, metrics = free_port(), free_port()
        cmd = [sys.executable, "-m", "slime.cli", "run", "--kubeconfig", str(self.cluster.kubeconfig),
               "--config", str(config), "--standalone", "--liveness", f"http://127.0.0.1:{liveness}/healthz",
               "--metrics-addr", f"127.0.0.1:{metrics}", "--log-format", "text"]
        log: IO[bytes] = self.stack.enter_context(self.operator_log.open("wb"))
        print(f"Starting slime run (modules {', '.join(registry.names())}; log {self.operator_log})...", flush=True)
        # Own session: Ctrl-C reaches only the demo, which stops the operator first, in order.
        self.operator = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=die_with_parent)
        self.stack.callback(self._stop_operator)

        def live() -> bool:
            self.check_alive()
            with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as r:
                return bool(r.status == 200)

        self._wait(live, 60, "the operator's liveness endpoint")
        print(f"Operator up: metrics at http://127.0.0.1:{metrics}/metrics", flush=True)

    def _stop_operator(self) -> None:
        if self.operator is not None:
            stop_process(self.operator, 20)

    # -- while running ----------------------------------------------------------------------------

    def set_cpu(self, total: float) -> None:
        """Export the adaptive sample's pods' CPU, summing to ``total``."""
        self.cpu = total
        if self.exporter is None:
            return
        pods = [p for p in self.kube.list(kinds.POD, NAMESPACE)
                if (p["metadata"].get("labels") or {}).get("app") == ADAPTIVE]
        for pod in pods:
            self.exporter.set_cpu(NAMESPACE, pod["metadata"]["name"], total / len(pods))

    def settled(self) -> bool:
        return settled(self.kube)

    def not_ready(self) -> list[str]:
        return not_ready(self.kube)

    def check_alive(self) -> None:
        self.cluster.check_alive()
        if self.operator is not None and self.operator.poll() is not None:
            raise DemoError(f"slime run exited with {self.operator.returncode}; log tail:\n{self.operator_tail()}")

    def operator_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.operator_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def header(self, next_flip: float | None) -> str:
        if self.exporter is None:
            return "No Prometheus: the adaptive sample cannot be evaluated."
        state = "above" if self.cpu > CPU_THRESHOLD else "below"
        effect = "in force" if state == "above" else "not in force"
        text = (f"Exported cpu.sum of {NAMESPACE}/{ADAPTIVE}: {self.cpu:g}, {state} its threshold "
                f"{CPU_THRESHOLD:g}: its EnvoyFilter should be {effect}")
        if next_flip is not None:
            text += f" (moves in {max(0.0, next_flip - time.monotonic()):.0f}s)"
        return text

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.5)

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.settled() and not self.not_ready():
                return True
            time.sleep(1)
        return self.settled() and not self.not_ready()


def run_once(demo: Demo) -> int:
    demo.setup(cpu=CPU_HIGH)
    ok = demo.wait_settled(SETTLE_TIMEOUT)
    print("\n" + demo.header(None) + "\n\n" + show_state(demo.kube), flush=True)
    if not ok:
        print(f"\nNot Ready after {SETTLE_TIMEOUT:g}s: {', '.join(demo.not_ready()) or 'status not written'}. "
              f"Operator log tail:\n{demo.operator_tail()}", flush=True)
        return 1
    return 0


def run_forever(demo: Demo) -> None:
    demo.setup(cpu=CPU_LOW)
    next_flip = time.monotonic() + FLIP_EVERY
    while True:
        demo.check_alive()
        if time.monotonic() >= next_flip:
            demo.set_cpu(CPU_HIGH if demo.cpu < CPU_THRESHOLD else CPU_LOW)
            next_flip = time.monotonic() + FLIP_EVERY
        screen = (f"{demo.header(next_flip)}\n\n{show_state(demo.kube)}\n\n"
                  f"kubectl --kubeconfig {demo.kubeconfig_out} get slime -A   Ctrl-C stops the demo.")
        if sys.stdout.isatty():
            print("\033[H\033[2J", end="")  # clear the screen: a live view
        else:
            print("-" * 40)
        print(f"{time.strftime('%H:%M:%S')}  {screen}", flush=True)
        time.sleep(REFRESH_EVERY)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slime.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--once", action="store_true",
                   help="set up, print the state once things settled, tear down (exit 1 if a sample is not Ready)")
    p.add_argument("--keep", action="store_true", help="keep the logs and module config after exit (path printed)")
    p.add_argument("--kubeconfig-out", type=Path, default=KUBECONFIG_OUT, help="where to write the kubeconfig")
    p.add_argument("--dev-cluster", action="store_true",
                   help="the plain local control plane (no node, fake Pods), even where the mesh bed can run")
    return p


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C: everything is stopped in order


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    from slime import demobed

    why = "--dev-cluster" if args.dev_cluster else demobed.bed_unavailable()
    try:
        if why is None:
            return demobed.main(args.once)
        print(f"Running the demo on the plain dev cluster (fake Pods, no traffic): the mesh bed is off ({why}).",
              flush=True)
        with Demo(args.keep, args.kubeconfig_out) as demo:
            if args.once:
                return run_once(demo)
            run_forever(demo)
    except KeyboardInterrupt:
        return 0
    except (DemoError, DevClusterError, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
