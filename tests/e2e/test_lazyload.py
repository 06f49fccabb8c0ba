"""lazyload end to end: auto-fence -> a narrow Sidecar; the first call to an unknown Service detours
through the global-sidecar (a plain Envoy in its Pod) and succeeds; its access log reaches the
operator's ALS server; the caller's Sidecar gains the Service; istiod pushes it; later calls go
straight; after the TTL the caller's config narrows again."""

from __future__ import annotations

import json
import time
from typing import Any

from slime.devtools import xdscheck
from slime.devtools.meshops import PodRef
from slime.devtools.prometheus import wait_until
from slime.meshbed import LAZYLOAD_PORT, LAZYLOAD_TTL, MeshBed
from tests.e2e.conftest import cr_ready, custom_object

GS_NAMESPACE = "mesh-operator"
GS_CLUSTER = f"outbound|80||global-sidecar.{GS_NAMESPACE}.svc.cluster.local"
FORWARDER_ADMIN = 15900  # the forwarder's admin port (localhost only: read through kubectl exec)


def forwarded(bed: MeshBed, gs: PodRef) -> int:
    """Requests the global-sidecar's forwarder completed (all its listeners), from its own admin."""
    code = (f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{FORWARDER_ADMIN}/stats?format=json"
            "&filter=^http[.]forward_[0-9]+[.]downstream_rq_completed$').read().decode())")
    out = bed.kubectl("exec", "-n", gs.namespace, gs.name, "--", "python3", "-c", code)
    return sum(int(s["value"]) for s in json.loads(out)["stats"])


def learned(status: dict[str, Any] | None, host: str) -> bool:
    return f'{{destination_service="{host}"}}' in ((status or {}).get("metricStatus") or {})


def test_first_call_detours_then_goes_direct_and_expires(mesh_bed: MeshBed, bed_ns: str) -> None:
    # a label of its own field manager (the bed's server-side applies of the namespace would drop it)
    mesh_bed.kubectl("label", "namespace", bed_ns, "slime.io/serviceFenced=true")
    [gs] = mesh_bed.wait_pods(GS_NAMESPACE, "app=global-sidecar", 1)
    caller = mesh_bed.deploy_app("caller", bed_ns, port=LAZYLOAD_PORT, wait=False)
    callee = mesh_bed.deploy_app("callee", bed_ns, port=LAZYLOAD_PORT)
    caller.pods = mesh_bed.wait_pods(bed_ns, "app=caller", 1)
    a = mesh_bed.proxy(caller.pods[0])
    direct = f"outbound|{LAZYLOAD_PORT}||{callee.fqdn}"

    # auto-fence: the caller's fence and Sidecar (only the istio and slime namespaces); its Envoy
    # has the global-sidecar and not the callee
    wait_until(lambda: cr_ready(mesh_bed, "servicefences", bed_ns, "caller"), 60, what="the auto-created fence")
    sidecar = wait_until(lambda: custom_object(mesh_bed, "sidecars", bed_ns, "caller"), 30, what="its Sidecar")
    assert f"*/{callee.fqdn}" not in sidecar["spec"]["egress"][0]["hosts"]
    a.wait_accepted(applied=lambda d: GS_CLUSTER in (names := xdscheck.cluster_names(d)) and direct not in names,
                    timeout=60)
    baseline = forwarded(mesh_bed, gs)

    # the first call: through the global-sidecar, and it succeeds
    t0 = time.monotonic()
    out = mesh_bed.http_get(caller.pods[0], f"http://callee:{LAZYLOAD_PORT}/first")
    assert out["codes"] == [200], out
    seen = json.loads(out["bodies"][0])
    assert seen["pod"] == callee.pods[0].name
    assert seen["headers"]["host"] == f"callee.{bed_ns}:{LAZYLOAD_PORT}"  # the forwarder completed the short name
    assert forwarded(mesh_bed, gs) == baseline + 1

    # the access log reached the operator: the fence learned the callee, the Sidecar has it, istiod pushed it
    status = wait_until(lambda: (s := cr_ready(mesh_bed, "servicefences", bed_ns, "caller")) and learned(s, callee.fqdn)
                        and s, 30, what="the dependency in the fence's status")
    learned_in = time.monotonic() - t0
    wait_until(lambda: f"*/{callee.fqdn}" in (custom_object(mesh_bed, "sidecars", bed_ns, "caller") or {}).get(
        "spec", {}).get("egress", [{}])[0].get("hosts", []), 30, what="the callee in the caller's Sidecar")
    a.wait_accepted(applied=lambda d: direct in xdscheck.cluster_names(d), timeout=30)
    pushed_in = time.monotonic() - t0
    assert learned_in < LAZYLOAD_TTL / 2, (learned_in, status)

    # later calls go straight to the callee: the global-sidecar sees none of them
    out = mesh_bed.http_get(caller.pods[0], f"http://callee:{LAZYLOAD_PORT}/next", count=3)
    assert out["codes"] == [200] * 3, out
    assert json.loads(out["bodies"][0])["headers"]["host"] == f"callee:{LAZYLOAD_PORT}"  # as the caller sent it
    assert forwarded(mesh_bed, gs) == baseline + 1
    assert xdscheck.cluster_stat(a.stats(), direct, "upstream_rq_200") == 3
    assert time.monotonic() - t0 < LAZYLOAD_TTL, "too slow to see the direct path before the TTL"

    # not called for the TTL: the dependency is forgotten and the caller's config narrows again
    a.wait_accepted(applied=lambda d: direct not in xdscheck.cluster_names(d), timeout=LAZYLOAD_TTL + 30)
    assert not learned(custom_object(mesh_bed, "servicefences", bed_ns, "caller")["status"], callee.fqdn)
    print(f"\nlazyload e2e: learned in {learned_in:.2f}s, pushed to the caller's Envoy in {pushed_in:.2f}s, "
          f"narrowed again {time.monotonic() - t0:.1f}s after the first call (TTL {LAZYLOAD_TTL}s)")
