"""``slime``: run the operator, render offline, print CRDs, or start a local dev cluster."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

MODULE_KINDS = ["limiter", "plugin", "lazyload", "boot"]


def _version() -> str:
    try:
        return version("slime")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _modules(text: str) -> list[str]:
    kinds = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [k for k in kinds if k not in MODULE_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULE_KINDS)}")
    return kinds


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slime", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator with any set of modules in one process")
    run.add_argument("--modules", type=_modules, default=MODULE_KINDS, help="comma-separated (default: all)")
    run.add_argument("--config", type=Path, help="module configuration (upstream's shape)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster (default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' = off)")
    run.add_argument("--metrics-addr", default="0.0.0.0:9090", help="host:port of /metrics ('' = off)")
    run.add_argument("--standalone", action="store_true", help="no peering (no leader election)")
    run.add_argument("--priority", type=int, help="peering priority (default: random; highest runs)")
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    run.add_argument("--verbose", "-v", action="store_true")

    render = sub.add_parser("render", help="print the Istio objects the operator would write (no cluster)")
    render.add_argument("-f", "--filename", action="append", type=Path, required=True,
                        help="file or directory of Slime CRs and cluster objects (repeatable)")
    render.add_argument("--metrics", type=Path, help="YAML map '<namespace>/<name>' -> {metric: value}")
    render.add_argument("--config", type=Path, help="module configuration (upstream's shape)")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")

    sub.add_parser("crds", help="print the generated CustomResourceDefinitions")
    sub.add_parser("version", help="print the version")

    dev = sub.add_parser("dev-cluster", help="start a local etcd + kube-apiserver + controller-manager")
    dev.add_argument("--kubeconfig-out", type=Path, default=Path("slime-dev.kubeconfig"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130


def _load_configs(path: Path | None) -> list[Any]:
    from slime.framework.config import ConfigError, load_module_configs

    if path is None:
        return []
    try:
        return load_module_configs(path.read_text())
    except (OSError, ConfigError, yaml.YAMLError) as e:
        raise SystemExit(f"error: --config {path}: {e}") from e


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        print(f"slime {_version()}")
        return 0
    if args.command == "crds":
        from slime.crds import all_crds

        print(yaml.safe_dump_all(all_crds(), sort_keys=False), end="")
        return 0
    if args.command == "render":
        from slime.render import RenderError, dump_yaml, render_paths

        notes: list[str] = []
        problems: list[str] = []
        try:
            objects = render_paths(args.filename, _load_configs(args.config), args.metrics, notes)
        except RenderError as e:
            problems = e.problems
        for line in [f"note: {n}" for n in notes] + [f"error: {p}" for p in problems]:
            print(line, file=sys.stderr)
        if problems:
            return 1
        if args.output == "json":
            print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
        else:
            print(dump_yaml(objects), end="")
        return 0
    if args.command == "run":
        from slime.operator import RunOptions, run

        run(RunOptions(
            modules=args.modules, configs=_load_configs(args.config), namespaces=args.namespace,
            kubeconfig=args.kubeconfig, liveness=args.liveness or None, metrics_addr=args.metrics_addr or None,
            peering=not args.standalone, priority=args.priority, log_json=args.log_format == "json",
            verbose=args.verbose,
        ))
        return 0
    if args.command == "dev-cluster":
        from slime.crds import crd_files
        from slime.devcluster import istio_crds, run_dev_cluster

        run_dev_cluster(args.kubeconfig_out, [*crd_files(), istio_crds()])
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
