"""``python -m bench.churn [--limiters N] [--cycles C]``: the operator's memory over create/delete
cycles (not a test: it prints numbers).

One local control plane and one `slime run --modules limiter`; each cycle creates N SmartLimiters
(static quotas, one Service each), waits until the operator has written every status, deletes them
all, waits until it has seen every deletion (its per-object gauges are gone from /metrics), and
prints the operator's RSS. What it shows: whether per-object state (state maps, scheduler keys,
status caches, child-name claims, metric label sets) outlives the objects.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.cluster import Operator
from bench.mix import GROUP, PLURAL, VERSION, module_config
from slime.devcluster import DevCluster, find_controlplane_bin, istio_crds

REPO = Path(__file__).resolve().parents[1]
NS = "churn"


def limiter(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SmartLimiter", "metadata": {"name": name, "namespace": NS},
            "spec": {"workloadSelector": {"app": name}, "sets": {"_base": {"descriptor": [{
                "action": {"fill_interval": {"seconds": 1}, "quota": "10"}, "condition": "true",
                "target": {"port": 80}}]}}}}


def tracked(op: Operator) -> int:
    """Objects the operator still exports a condition gauge for."""
    return len([k for k in op.counter("slime_resource_condition") if "condition=Ready" in k and "status=True" in k])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limiters", type=int, default=1000)
    p.add_argument("--cycles", type=int, default=10)
    args = p.parse_args(argv)
    crds = [*sorted(REPO.glob("crds/*.yaml")), istio_crds()]
    names = [f"l-{i}" for i in range(args.limiters)]
    with DevCluster(crds, bin_dir=find_controlplane_bin()) as dc, TemporaryDirectory() as tmp:
        api = k8s_config.new_client_from_config(str(dc.kubeconfig))
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NS}})  # type: ignore[arg-type]
        config = Path(tmp) / "limiter.yaml"
        config.write_text(yaml.safe_dump(module_config("5s", None)))
        op = Operator(dc.kubeconfig, config, Path(tmp) / "operator.log")
        op.wait_alive(120)
        time.sleep(2)
        print(f"cycle 0: operator RSS {op.rss_mib():.1f} MiB (idle, nothing created)", flush=True)
        try:
            for cycle in range(1, args.cycles + 1):
                t = time.monotonic()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda n: custom.create_namespaced_custom_object(
                        GROUP, VERSION, NS, PLURAL, limiter(n)), names))
                while tracked(op) < len(names):
                    op.check()
                    time.sleep(0.5)
                up = op.rss_mib()
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda n: custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, n),
                                  names))
                while tracked(op) > 0:
                    op.check()
                    time.sleep(0.5)
                time.sleep(35)  # the operator's housekeeping (every 30 s) reports its caches, trims memory
                caches = {k.split("cache=")[1].split(",")[0]: int(v)
                          for k, v in op.counter("slime_cached_entries").items() if "module=limiter" in k}
                print(f"cycle {cycle}: {len(names)} created and deleted in {time.monotonic() - t:.0f}s; operator "
                      f"RSS {up:.1f} MiB with them, {op.rss_mib():.1f} MiB after; per-object caches after: "
                      f"{caches}", flush=True)
        finally:
            op.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
