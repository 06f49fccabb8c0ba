"""The bed's node: Pods from local images run, logs/exec work, ClusterIPs answer, Pods reach the
apiserver through the `kubernetes` Service, and the guard keeps Pod traffic on the node address."""

from __future__ import annotations

import json
import subprocess

from kubernetes import client

from slime.devtools.hostnet import BRIDGE, GUARD_COMMENT, NODE_IP
from slime.devtools.node import NODE_NAME
from slime.meshbed import MeshBed


def test_node_is_ready_with_its_address(mesh_bed: MeshBed) -> None:
    node = client.CoreV1Api(mesh_bed.api).read_node(NODE_NAME)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == [NODE_IP]
    assert not [t for t in node.spec.taints or [] if t.key.startswith("node.kubernetes.io/")]


def test_pods_run_local_images_and_serve_through_a_cluster_ip(mesh_bed: MeshBed, bed_ns: str) -> None:
    app = mesh_bed.deploy_app("web", bed_ns, sidecar=False, replicas=2)
    client_pod = mesh_bed.client(bed_ns)
    assert all(p.ip.startswith(NODE_IP.rsplit(".", 1)[0] + ".") for p in app.pods)
    out = mesh_bed.http_get(client_pod, f"{app.url}/through-the-service", count=4)
    assert out["codes"] == [200] * 4, out
    body = json.loads(out["bodies"][0])
    assert body["path"] == "/through-the-service" and body["peer"] == client_pod.ip
    # kubectl logs and exec go through the apiserver to the kubelet
    logs = "".join(mesh_bed.kubectl("logs", "-n", bed_ns, p.name, "-c", "app") for p in app.pods)
    assert "/through-the-service" in logs
    assert mesh_bed.kubectl("exec", "-n", bed_ns, app.pods[0].name, "--", "cat", "/etc/hostname").strip() \
        == app.pods[0].name


def test_pods_reach_the_apiserver_through_the_kubernetes_service(mesh_bed: MeshBed, bed_ns: str) -> None:
    core = client.CoreV1Api(mesh_bed.api)
    svc_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    pod = mesh_bed.client(bed_ns)
    # /version needs no credentials; the TLS handshake is with the real apiserver
    code = mesh_bed.kubectl("exec", "-n", bed_ns, pod.name, "--", "python3", "-c",
                            "import ssl, urllib.request; ctx = ssl._create_unverified_context(); "
                            f"print(urllib.request.urlopen('https://{svc_ip}/version', context=ctx).read().decode())")
    assert json.loads(code)["gitVersion"].startswith("v1.")


def test_service_names_resolve_and_nothing_else(mesh_bed: MeshBed, bed_ns: str) -> None:
    app = mesh_bed.deploy_app("named", bed_ns, sidecar=False)
    pod = mesh_bed.client(bed_ns)
    out = mesh_bed.kubectl("exec", "-n", bed_ns, pod.name, "--", "python3", "-c",
                           "import socket, json\n"
                           "def ip(n):\n"
                           "    try:\n        return socket.gethostbyname(n)\n"
                           "    except OSError as e:\n        return type(e).__name__\n"
                           "print(json.dumps([ip(n) for n in ('kubernetes.default.svc', 'named', "
                           "'named." + bed_ns + ".svc.cluster.local', 'example.com')]))")
    kube_ip = client.CoreV1Api(mesh_bed.api).read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert json.loads(out) == [kube_ip, app.service_ip, app.service_ip, "gaierror"]
    assert mesh_bed.http_get(pod, "http://named:8080/by-name")["codes"] == [200]


def test_pods_reach_the_host_only_on_the_node_address(mesh_bed: MeshBed, bed_ns: str) -> None:
    """A Pod's packet to another address of this host is dropped by the guard (not refused)."""
    route = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", "scope", "global"], capture_output=True,
                                      text=True, check=True).stdout)
    others = [a["local"] for link in route if link["ifname"] != BRIDGE for a in link.get("addr_info", [])]
    assert GUARD_COMMENT in subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                                           check=True).stdout
    if not others:
        return
    pod = mesh_bed.client(bed_ns)
    out = mesh_bed.kubectl("exec", "-n", bed_ns, pod.name, "--", "python3", "-c",
                           "import socket\n"
                           f"s = socket.socket(); s.settimeout(2)\n"
                           f"try:\n    s.connect(('{others[0]}', 9)); print('connected')\n"
                           "except socket.timeout: print('dropped')\n"
                           "except OSError as e: print('refused', e)\n")
    assert out.strip() == "dropped", out
