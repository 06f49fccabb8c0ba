"""``slime``: run the operator, render offline, print CRDs, or start a local dev cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _registry() -> Any:
    from slime import registry

    return registry


def _modules(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    known = _registry().names()
    unknown = [k for k in names if k not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slime", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    known = ",".join(_registry().names())

    run = sub.add_parser("run", help="run the operator with any set of modules in one process")
    run.add_argument("--modules", type=_modules, default=None, help=f"comma-separated (default: all: {known})")
    run.add_argument("--config", type=Path, help="module configuration (upstream's shape)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], help="watch only these namespaces")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster (default)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint URL ('' = off)")
    run.add_argument("--metrics-addr", default="0.0.0.0:9090", help="host:port of /metrics ('' = off)")
    run.add_argument("--standalone", action="store_true", help="no peering (no leader election)")
    run.add_argument("--priority", type=int, help="peering priority (default: random; highest runs)")
    run.add_argument("--peering-lifetime", type=int, default=10, metavar="SECONDS",
                     help="a replica not seen for this long is gone; a standby takes over after about as long "
                          "(kopf renews 5-10 s before; default 10)")
    run.add_argument("--log-format", choices=["json", "text"], default="json")
    run.add_argument("--verbose", "-v", action="store_true")

    render = sub.add_parser("render", help="print the Istio objects the operator would write (no cluster)")
    render.add_argument("-f", "--filename", action="append", type=Path, required=True,
                        help="file or directory of Slime CRs and cluster objects ('-': stdin; repeatable)")
    render.add_argument("-R", "--recursive", action="store_true", help="read directories recursively")
    render.add_argument("--metrics", type=Path, help="YAML map '<namespace>/<name>' -> {metric: value}")
    render.add_argument("--config", type=Path, help="module configuration (upstream's shape)")
    render.add_argument("--status", action="store_true",
                        help="also print each Slime object with the status the operator would write")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")

    sub.add_parser("crds", help="print the generated CustomResourceDefinitions")
    sub.add_parser("version", help="print the version")

    dev = sub.add_parser("dev-cluster", help="start a local etcd + kube-apiserver + controller-manager")
    dev.add_argument("--kubeconfig-out", type=Path, default=Path("slime-dev.kubeconfig"))
    return p


class UsageError(Exception):
    """A user mistake: one line, exit 1, no traceback."""


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # the registry: an extra module that cannot be loaded
        from slime.registry import UnknownModuleError

        if not isinstance(e, UnknownModuleError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 1


def _load_configs(path: Path | None, modules: list[str] | None = None) -> list[Any]:
    """The module configs of ``--config``, each ``general`` validated by its module's model."""
    from slime.framework.config import ConfigError, load_module_configs

    if path is None:
        return []
    try:
        configs = load_module_configs(path.read_text())
        _registry().settings_for(configs, modules)
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except (ConfigError, yaml.YAMLError) as e:
        raise UsageError(f"--config {path}: {e}") from None
    return configs


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "version":
        from slime.operator import version

        print(f"slime {version()}")
        return 0
    if args.command == "crds":
        from slime.crds import all_crds

        print(yaml.safe_dump_all(all_crds(), sort_keys=False), end="")
        return 0
    if args.command == "render":
        return _render(args)
    if args.command == "run":
        return _run(args)
    if args.command == "dev-cluster":
        from slime.crds import crd_files
        from slime.devcluster import istio_crds, run_dev_cluster

        run_dev_cluster(args.kubeconfig_out, [*crd_files(), istio_crds()])
        return 0
    raise AssertionError(args.command)


def _render(args: argparse.Namespace) -> int:
    from slime.render import dump_yaml, render_paths

    output = render_paths(args.filename, _load_configs(args.config), args.metrics, args.recursive)
    for line in [f"note: {n}" for n in output.notes] + [f"error: {p}" for p in output.errors]:
        print(line, file=sys.stderr)
    if output.errors:
        return 1
    items = output.objects + (output.statuses if args.status else [])
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    else:
        print(dump_yaml(items), end="")
    return 0


def _check_listen(flag: str, value: str) -> None:
    """Fail before starting anything when an address to serve on is taken (kopf would log a traceback)."""
    import socket
    import urllib.parse

    if not value:
        return
    if "://" in value:
        url = urllib.parse.urlsplit(value)
        host, port = url.hostname or "0.0.0.0", url.port or 80
    else:
        host, _, port_text = value.rpartition(":")
        host, port = host or "0.0.0.0", int(port_text)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port} ({flag} {value}): {e.strerror}") from None


def _run(args: argparse.Namespace) -> int:
    import errno
    import os

    from slime.operator import RunOptions, run

    configs = _load_configs(args.config, args.modules)
    if args.kubeconfig and not os.path.isfile(args.kubeconfig):
        raise UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
    for flag, value in (("--liveness", args.liveness), ("--metrics-addr", args.metrics_addr)):
        _check_listen(flag, value)
    options = RunOptions(
        modules=args.modules, configs=configs, namespaces=args.namespace, kubeconfig=args.kubeconfig,
        liveness=args.liveness or None, metrics_addr=args.metrics_addr or None, peering=not args.standalone,
        priority=args.priority, peering_lifetime=args.peering_lifetime, log_json=args.log_format == "json",
        verbose=args.verbose,
    )
    try:
        run(options)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"cannot listen: {e.strerror} (--metrics-addr {args.metrics_addr}, "
                             f"--liveness {args.liveness})") from None
        raise
    except Exception as e:
        from kubernetes.config import ConfigException

        if isinstance(e, ConfigException):
            raise UsageError(f"no cluster to talk to: {e} (give --kubeconfig, set KUBECONFIG, "
                             "or run in a pod)") from None
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
