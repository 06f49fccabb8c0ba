"""``python -m bench.plugins [--each N] [--rate R] [--duration S]``: the plugin module's benchmark
(prints numbers; not a test).

* render: PluginManager and EnvoyPlugin renders per second through the module's context + render
  (pure, one process);
* on one local control plane with `slime run --modules plugin`: N PluginManagers and N EnvoyPlugins
  (the samples' shapes, one name each) are created, the time until every EnvoyFilter exists is printed;
  then R applies/s for S seconds (half new CRs, half edits of existing ones, alternating kinds): the
  latency from the apply call returning to the watch event of the EnvoyFilter carrying the change.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.cluster import Operator, Watcher, percentiles
from slime.devcluster import DevCluster, find_controlplane_bin, istio_crds
from slime.framework.finish import finish
from slime.framework.module import Metrics, ObjectsView
from slime.registry import settings_for

REPO = Path(__file__).resolve().parents[1]
GROUP, VERSION = "microservice.slime.io", "v1alpha1"
NS = "plugins"
PLURALS = {"PluginManager": "pluginmanagers", "EnvoyPlugin": "envoyplugins"}


def templates() -> dict[str, dict[str, Any]]:
    out = {}
    for name in ("lua-and-rbac.yaml", "per-route.yaml"):
        for doc in yaml.safe_load_all((REPO / "samples/plugin" / name).read_text()):
            if doc and doc.get("kind") in PLURALS and doc["kind"] not in out:
                out[doc["kind"]] = doc
    return out


def make(kind: str, name: str, marker: int) -> dict[str, Any]:
    """A CR of ``kind`` named ``name``; ``marker`` goes into a Lua string (PluginManager) or the route
    (EnvoyPlugin), so an edit shows in its EnvoyFilter."""
    obj = copy.deepcopy(templates()[kind])
    obj["metadata"] = {"name": name, "namespace": NS}
    if kind == "PluginManager":
        source = obj["spec"]["plugin"][0]["inline"]["settings"]["default_source_code"]
        source["inline_string"] = source["inline_string"].replace('"hello"', f'"hello-{marker}"')
    else:
        obj["spec"]["route"] = [f"inbound|http|9080/r-{marker}"]
    return obj


def marker_of(ef: dict[str, Any]) -> str:
    return json.dumps(ef.get("spec", {}))


def render_rate(n: int) -> dict[str, float]:
    module, settings, _ = next(e for e in settings_for([]) if e[0].name == "plugin")
    crs = [make(kind, f"r-{i}", i) for i in range(n) for kind in PLURALS]
    view = ObjectsView(crs)
    t = time.perf_counter()
    for cr in crs:
        rendered = finish(module, cr, module.render(cr, module.context(cr, view, settings, Metrics())))
        assert rendered.objects, rendered.conditions
    return {"renders_per_s": len(crs) / (time.perf_counter() - t)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plugins", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--each", type=int, default=1000, help="PluginManagers and EnvoyPlugins each (default 1000)")
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--duration", type=float, default=30.0)
    args = p.parse_args(argv)
    r = render_rate(500)
    print(f"render: {r['renders_per_s']:.0f} PluginManagers/EnvoyPlugins per second (context + render + checks)",
          flush=True)
    crds = [*sorted(REPO.glob("crds/*.yaml")), istio_crds()]
    with DevCluster(crds, bin_dir=find_controlplane_bin(), namespaces=[NS]) as dc, TemporaryDirectory() as tmp:
        api = k8s_config.new_client_from_config(str(dc.kubeconfig))
        custom = k8s.CustomObjectsApi(api)
        efs = Watcher(api, ("networking.istio.io", "v1alpha3", "envoyfilters"))
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({"name": "plugin", "kind": "plugin", "enable": True}))
        op = Operator(dc.kubeconfig, config, Path(tmp) / "operator.log", modules="plugin")
        op.wait_alive(120)
        names = [(kind, f"{kind.lower()}-{i}") for i in range(args.each) for kind in PLURALS]
        t = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda kn: custom.create_namespaced_custom_object(
                GROUP, VERSION, NS, PLURALS[kn[0]], make(kn[0], kn[1], 0)), names))
        created = time.monotonic() - t
        keys = [(NS, name) for _, name in names]
        while efs.count(keys) < len(keys):
            op.check()
            efs.check()
            time.sleep(0.2)
        print(f"setup: {len(names)} CRs created in {created:.1f}s; all their EnvoyFilters after "
              f"{time.monotonic() - t:.1f}s", flush=True)
        time.sleep(3)
        pending = []
        module, settings, _ = next(e for e in settings_for([]) if e[0].name == "plugin")
        n = int(args.rate * args.duration)
        start = time.monotonic()
        for i in range(n):
            time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            kind = list(PLURALS)[i % 2]
            create = i % 4 >= 2
            name = f"{kind.lower()}-new-{i}" if create else f"{kind.lower()}-{i * 7 % args.each}"
            body = make(kind, name, 1000 + i)
            rendered = module.render(body, module.context(body, ObjectsView([body]), settings, Metrics()))
            want = marker_of((rendered.objects or [{}])[0])
            waiter = efs.expect((NS, name), lambda kind_, obj, want=want: kind_ != "DELETED" and marker_of(obj) == want)
            if create:
                custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURALS[kind], body)
            else:
                custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURALS[kind], name, {"spec": body["spec"]})
            pending.append(("create" if create else "update", waiter, time.monotonic()))
        deadline = time.monotonic() + 30
        for _, w, _ in pending:
            w.done.wait(max(0.0, deadline - time.monotonic()))
        lat = [w.at - t0 for _, w, t0 in pending if w.done.is_set()]
        stats = percentiles(lat)
        missed = sum(not w.done.is_set() for _, w, _ in pending)
        print(f"apply -> EnvoyFilter with {len(names)} present, {args.rate:g}/s: p50 {stats['p50'] * 1000:.0f} ms, "
              f"p99 {stats['p99'] * 1000:.0f} ms, max {stats['max'] * 1000:.0f} ms (n={stats['n']}, "
              f"not seen within 30s: {missed}); operator RSS {op.rss_mib():.0f} MiB", flush=True)
        efs.stop()
        op.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
