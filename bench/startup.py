"""``python -m bench.startup [PODS ...]``: from `slime run` to a limiter's first evaluation, with many
pods in the cluster (not a test: it prints numbers).

One local control plane; for each count, Running pods are added up to it (three of them selected by
the limiter), the limiter's quota is edited (so that its status lags), a fresh operator is started,
and the time until the status shows the edit is printed. What it measures: how the start of the
operator scales with the size of the cluster (the cluster copies it lists and watches).
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
NS = "startup"


def limiter(quota: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SmartLimiter", "metadata": {"name": "web", "namespace": NS},
            "spec": {"sets": {"_base": {"descriptor": [{
                "action": {"fill_interval": {"seconds": 1}, "quota": quota},
                "condition": "true", "target": {"port": 80}}]}}}}


def evaluated(custom: k8s.CustomObjectsApi) -> bool:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web")
    return bool((obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pods", nargs="*", type=int, default=[1000, 3000, 6000], help="pod counts (ascending)")
    args = p.parse_args(argv)
    crds = [*sorted(REPO.glob("crds/*.yaml")), istio_crds()]
    with DevCluster(crds, bin_dir=find_controlplane_bin()) as dc, TemporaryDirectory() as tmp:
        api = k8s_config.new_client_from_config(str(dc.kubeconfig))
        core, custom = k8s.CoreV1Api(api), k8s.CustomObjectsApi(api)
        core.create_namespace({"metadata": {"name": NS}})  # type: ignore[arg-type]
        core.create_namespaced_service(NS, {"metadata": {"name": "web"},  # type: ignore[arg-type]
                                            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})

        def pod(i: int) -> None:
            labels = {"app": "web" if i < 3 else f"other-{i}"}
            core.create_namespaced_pod(NS, {"metadata": {"name": f"pod-{i}", "labels": labels},  # type: ignore[arg-type]
                                            "spec": {"containers": [{"name": "app", "image": "app"}]}})
            core.patch_namespaced_pod_status(f"pod-{i}", NS, {"status": {"phase": "Running"}})

        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, limiter("300/{{._base.pod}}"))
        config = Path(tmp) / "limiter.yaml"
        config.write_text(yaml.safe_dump(module_config("1s", None)))
        made = 0
        for count in sorted(args.pods):
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(pod, range(made, count)))
            made = count
            custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web",
                                                  {"spec": limiter(f"{count}/{{{{._base.pod}}}}")["spec"]})
            started = time.monotonic()
            op = Operator(dc.kubeconfig, config, Path(tmp) / f"operator-{count}.log")
            op.wait_alive(120)
            alive = time.monotonic() - started
            while not evaluated(custom):
                op.check()
                time.sleep(0.1)
            print(f"{count} pods: operator alive after {alive:.1f}s, limiter evaluated after "
                  f"{time.monotonic() - started:.1f}s", flush=True)
            op.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
