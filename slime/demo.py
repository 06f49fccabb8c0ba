"""``make demo``: the product on a built-in local cluster, in one command.

Starts the local control plane (``slime.devcluster``), Prometheus scraping a small exporter of
made-up CPU values (when /usr/bin/prometheus exists), and ``slime run`` with all modules; creates
the ``reviews`` workload in namespace ``demo`` and applies the demo's Slime CRs plus those of
``samples/``; then shows the Slime CRs and the EnvoyFilters they produced, every few seconds,
while the exported CPU crosses the demo SmartLimiter's threshold back and forth. Ctrl-C stops
everything. ``--once`` sets up, prints the state once things settled, and tears down.
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

from slime import registry
from slime.crds import crd_files
from slime.devcluster import DEFAULT_NAMESPACES, DevCluster, DevClusterError, istio_crds
from slime.devtools import die_with_parent, stop_process
from slime.devtools.prometheus import Exporter, free_port, prometheus_available, run_prometheus
from slime.framework.kinds import ENVOY_FILTER, POD
from slime.framework.kube import Kube
from slime.framework.runtime import api_client

NAMESPACE = "demo"
APP = "reviews"
MANIFESTS = Path(__file__).with_name("demo_manifests")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # only in a source checkout
KUBECONFIG_OUT = Path("slime-demo.kubeconfig")
MODULES = ",".join(registry.names())
# The demo SmartLimiter is in force while cpu.sum > 100 (demo_manifests/smartlimiter.yaml).
CPU_THRESHOLD, CPU_LOW, CPU_HIGH = 100.0, 40.0, 160.0
CPU_QUERY = 'sum(container_cpu_usage_seconds_total{namespace="$namespace",pod=~"$pod_name"})'
FLIP_EVERY = 20.0  # seconds between CPU moves
REFRESH_EVERY = 3.0  # seconds between screens
SETTLE_TIMEOUT = 120.0
SLIME_KINDS = [info.kind_ref for info in registry.crd_infos()]
MODULE_OF = {info.kind: m.name for m in registry.modules() for info in m.kinds}


class DemoError(RuntimeError):
    pass


def limiter_config(prometheus_url: str | None) -> dict[str, Any]:
    """The limiter's module config: re-evaluate every 2s, cpu.sum per set from Prometheus."""
    config: dict[str, Any] = {
        "name": "limiter", "kind": "limiter", "enable": True,
        # no rate limit service in the demo: local limits only
        "general": {"refresh": "2s", "disableGlobalRateLimit": True, "disableInsertGlobalRateLimit": True},
    }
    if prometheus_url:
        config["metric"] = {"prometheus": {"address": prometheus_url,
                                           "handlers": {"cpu.sum": {"query": CPU_QUERY}}}}
    return config


def load_manifest(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def in_namespace(obj: dict[str, Any], namespace: str = NAMESPACE) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items()
            if k in ("name", "labels", "annotations")}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": {**meta, "namespace": namespace}}


def is_slime_cr(obj: dict[str, Any]) -> bool:
    return any(obj.get("apiVersion") == k.api_version and obj.get("kind") == k.kind for k in SLIME_KINDS)


def sample_crs(samples: Path, skip: set[tuple[str, str]]) -> dict[Path, list[dict[str, Any]]]:
    """The Slime CRs of each sample file (Services, Pods... are left out), minus names in ``skip``."""
    out: dict[Path, list[dict[str, Any]]] = {}
    paths = sorted(samples.rglob("*.yaml")) if samples.is_dir() else []
    for path in paths:
        try:
            docs = load_manifest(path)
        except yaml.YAMLError as e:
            print(f"  skipped {path}: {e}")
            continue
        crs = [in_namespace(d) for d in docs if is_slime_cr(d)
               and (d["kind"], (d.get("metadata") or {}).get("name")) not in skip]
        if crs:
            out[path] = crs
    return out


# ------------------------------------------------------------------------------------ the state


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("type") == type_), None)


def _cond_text(cond: dict[str, Any] | None) -> str:
    if cond is None:
        return "-"
    return cond.get("status", "?") + (f" ({cond['reason']})" if cond.get("reason") else "")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def slime_crs(kube: Kube) -> list[dict[str, Any]]:
    return [obj for kind in SLIME_KINDS for obj in kube.list(kind, None)]


def envoyfilters(kube: Kube) -> list[dict[str, Any]]:
    return kube.list(ENVOY_FILTER, None)


def show_state(kube: Kube) -> str:
    """The Slime CRs with their conditions and the EnvoyFilters that exist, as two tables."""
    rows = []
    for obj in slime_crs(kube):
        meta = obj["metadata"]
        ready, accepted = _condition(obj, "Ready"), _condition(obj, "Accepted")
        detail = _shorten((ready or accepted or {}).get("message") or "", 60)
        metrics = (obj.get("status") or {}).get("metricStatus") or {}
        if metrics:
            detail = " ".join(f"{k}={v}" for k, v in sorted(metrics.items())) + (f"; {detail}" if detail else "")
        rows.append([obj["kind"], f"{meta['namespace']}/{meta['name']}", _cond_text(ready),
                     _cond_text(accepted), detail])
    efs = []
    for ef in envoyfilters(kube):
        meta = ef["metadata"]
        owners = ", ".join(f"{o['kind']}/{o['name']}" for o in meta.get("ownerReferences") or []) or "-"
        efs.append([f"{meta['namespace']}/{meta['name']}", owners])
    return "\n".join([
        _table(["KIND", "NAME", "READY", "ACCEPTED", "DETAIL"], rows) if rows else "No Slime CRs.",
        "",
        _table(["ENVOYFILTER", "OWNER"], efs) if efs else "No EnvoyFilters.",
    ])


# ------------------------------------------------------------------------------------ the demo


class Demo:
    """Everything the demo starts, stopped in reverse order by one ExitStack."""

    def __init__(self, keep: bool, kubeconfig_out: Path, modules: str = MODULES) -> None:
        self.keep = keep
        self.modules = modules
        self.kubeconfig_out = kubeconfig_out
        self.stack = contextlib.ExitStack()
        self.workdir = Path(tempfile.mkdtemp(prefix="slime-demo-"))
        self.exporter: Exporter | None = None
        self.cpu_total = CPU_LOW
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

    def setup(self, cpu_total: float) -> None:
        self.cpu_total = cpu_total
        self.cluster = self._start_cluster()
        self.kube = Kube(api_client(str(self.cluster.kubeconfig)))
        self.cluster.apply_yaml([in_namespace(o) for o in load_manifest(MANIFESTS / "workloads.yaml")])
        self._wait(lambda: self.mark_pods_running() > 0, 60, "the reviews pods to be created")
        prometheus_url = self._start_prometheus()
        self._start_operator(prometheus_url)
        self._apply_crs()

    def _start_cluster(self) -> DevCluster:
        print("Starting the local control plane (etcd, kube-apiserver, kube-controller-manager)...", flush=True)
        ours = crd_files()
        self.stack.callback(shutil.rmtree, ours[0].parent, True)
        cluster = self.stack.enter_context(
            DevCluster([*ours, istio_crds()], namespaces=[*DEFAULT_NAMESPACES, NAMESPACE]))
        if self.keep:  # runs before the cluster removes its directory
            self.stack.callback(shutil.copytree, cluster.workdir / "logs", self.workdir / "cluster-logs")
        shutil.copyfile(cluster.kubeconfig, self.kubeconfig_out)
        self.kubeconfig_out.chmod(0o600)
        if not self.keep:
            self.stack.callback(self.kubeconfig_out.unlink, True)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
        print(f"Cluster up at {cluster.server} ({phases}). Try, in another terminal:\n"
              f"  kubectl --kubeconfig {self.kubeconfig_out} get slime,envoyfilters,pods -A\n"
              f"  kubectl --kubeconfig {self.kubeconfig_out} -n {NAMESPACE} get smartlimiter {APP} -o yaml",
              flush=True)
        return cluster

    def _start_prometheus(self) -> str | None:
        if not prometheus_available():
            print("Prometheus not found (apt-get install prometheus): the adaptive limit will report "
                  "missing metrics.", flush=True)
            return None
        self.exporter = self.stack.enter_context(Exporter())
        self.mark_pods_running()  # the pods' CPU series exist before the first scrape
        url: str = self.stack.enter_context(run_prometheus([self.exporter.target], scrape_interval="1s"))
        print(f"Prometheus at {url}, scraping the demo exporter at {self.exporter.target}", flush=True)
        return url

    def _start_operator(self, prometheus_url: str | None) -> None:
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump(limiter_config(prometheus_url), sort_keys=False))
        liveness, metrics = free_port(), free_port()
        cmd = [sys.executable, "-m", "slime.cli", "run", "--kubeconfig", str(self.cluster.kubeconfig),
               "--config", str(config), "--modules", self.modules, "--standalone",
               "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--metrics-addr", f"127.0.0.1:{metrics}",
               "--log-format", "text"]
        log: IO[bytes] = self.stack.enter_context(self.operator_log.open("wb"))
        print(f"Starting slime run (modules {self.modules}; log {self.operator_log})...", flush=True)
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

    def _apply_crs(self) -> None:
        ours = [in_namespace(o) for o in load_manifest(MANIFESTS / "smartlimiter.yaml")]
        sources: dict[Path, list[dict[str, Any]]] = {MANIFESTS / "smartlimiter.yaml": ours}
        # A sample with the same kind and name as a demo CR would replace it: the demo's wins.
        sources.update(sample_crs(SAMPLES, {(o["kind"], o["metadata"]["name"]) for o in ours}))
        for path, objs in sources.items():
            names = ", ".join(f"{o['kind']}/{o['metadata']['name']}" for o in objs)
            try:
                self.cluster.apply_yaml(objs)
                print(f"Applied {names} from {path.name}")
            except DevClusterError as e:  # a rejected sample is worth seeing, not fatal
                print(f"Rejected {names} from {path}: {e}")

    # -- while running ----------------------------------------------------------------------------

    def mark_pods_running(self) -> int:
        """Give the reviews pods the status a kubelet would (no kubelet here); export their CPU.

        Returns the number of pods."""
        pods = sorted(self.kube.list(POD, NAMESPACE, f"app={APP}"), key=lambda p: p["metadata"]["name"])
        for i, pod in enumerate(pods):
            if (pod.get("status") or {}).get("phase") != "Running":
                ip = f"10.244.0.{10 + i}"
                ready = [{"type": t, "status": "True"} for t in ("PodScheduled", "Initialized",
                                                                 "ContainersReady", "Ready")]
                status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                          "conditions": ready}
                self.kube.merge_patch(POD, NAMESPACE, pod["metadata"]["name"], {"status": status},
                                      subresource="status")
        if self.exporter is not None:
            for pod in pods:
                self.exporter.set_cpu(NAMESPACE, pod["metadata"]["name"], self.cpu_total / len(pods))
        return len(pods)

    def set_cpu(self, total: float) -> None:
        self.cpu_total = total
        self.mark_pods_running()

    def demo_envoyfilter(self) -> dict[str, Any] | None:
        return self.kube.get(ENVOY_FILTER, NAMESPACE, f"{APP}.{NAMESPACE}.ratelimit")

    def settled(self) -> bool:
        """Every Slime CR of a running module reports a condition; with Prometheus, the adaptive
        limit is in force."""
        modules = self.modules.split(",")
        if self.exporter is not None and "limiter" in modules and self.demo_envoyfilter() is None:
            return False
        return all((cr.get("status") or {}).get("conditions") for cr in slime_crs(self.kube)
                   if MODULE_OF.get(cr["kind"]) in modules)

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
            return "No Prometheus: adaptive limits cannot be evaluated."
        state = "above" if self.cpu_total > CPU_THRESHOLD else "below"
        effect = "be in force" if state == "above" else "not be in force"
        text = (f"Exported cpu.sum of {NAMESPACE}/{APP}: {self.cpu_total:g}, {state} the SmartLimiter's "
                f"threshold {CPU_THRESHOLD:g}: its limit should {effect}")
        if next_flip is not None:
            text += f" (moves in {max(0.0, next_flip - time.monotonic()):.0f}s)"
        return text

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except OSError:  # a server not listening yet
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.5)

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            self.mark_pods_running()
            if self.settled():
                return True
            time.sleep(1)
        return False


def run_once(demo: Demo) -> int:
    demo.setup(cpu_total=CPU_HIGH)
    ok = demo.wait_settled(SETTLE_TIMEOUT)
    print("\n" + demo.header(None) + "\n\n" + show_state(demo.kube), flush=True)
    if not ok:
        print(f"\nNot settled after {SETTLE_TIMEOUT:g}s. Operator log tail:\n{demo.operator_tail()}", flush=True)
        return 1
    return 0


def run_forever(demo: Demo) -> None:
    demo.setup(cpu_total=CPU_LOW)
    next_flip = time.monotonic() + FLIP_EVERY
    while True:
        demo.check_alive()
        if time.monotonic() >= next_flip:
            demo.set_cpu(CPU_HIGH if demo.cpu_total < CPU_THRESHOLD else CPU_LOW)
            next_flip = time.monotonic() + FLIP_EVERY
        else:
            demo.mark_pods_running()
        screen = (f"{demo.header(next_flip)}\n\n{show_state(demo.kube)}\n\n"
                  f"kubectl --kubeconfig {demo.kubeconfig_out} get slime,envoyfilters -A   Ctrl-C stops the demo.")
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
                   help="set up, print the state once things settled, tear down (exit 1 if they did not)")
    p.add_argument("--keep", action="store_true",
                   help="keep the logs, module config and kubeconfig after exit (path printed)")
    p.add_argument("--modules", default=MODULES, help=f"modules slime run hosts (default {MODULES})")
    p.add_argument("--kubeconfig-out", type=Path, default=KUBECONFIG_OUT, help="where to write the kubeconfig")
    return p


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwind like Ctrl-C: everything is stopped in order


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        with Demo(args.keep, args.kubeconfig_out, args.modules) as demo:
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
