"""A real Kubernetes node on this machine: containerd + runc, kubelet, kube-scheduler, kube-proxy.

It joins a :class:`slime.devcluster.DevCluster` whose apiserver serves on the node address
(``DevCluster(bind_address=NODE_IP, ...)``, see :mod:`slime.meshbed`). Pods get addresses on the
private bridge of :mod:`slime.devtools.hostnet`; images come only from local archives imported
into containerd (no registry is ever asked: pulls are pointed at a closed local port).

One node per machine (fixed bridge, cgroup and kubelet paths). Host changes are journaled and
undone by :meth:`Node.stop`, or by the next start after a crash; ``python -m slime.devtools.node
down`` does it by hand. Processes are started from the calling thread and die with it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from slime.devtools import die_with_parent, hostnet, process_rss, stop_process
from slime.devtools.hostnet import BRIDGE, NODE_IP, NODE_STATE, RUN_DIR, SUBNET, HostError

log = logging.getLogger(__name__)

NODE_NAME = "slime-node"
CONTAINERD_SOCK = RUN_DIR / "containerd" / "containerd.sock"
CNI_BIN = Path("/usr/lib/cni")
# Where a pull would go if a pod asked for an image that was not imported: a closed local port.
NO_REGISTRY = "http://127.0.0.1:9"


class NodeError(RuntimeError):
    """The node could not start, or did not become Ready."""


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(pause_image: str) -> str:
    """containerd 1.6 config: private root/state/socket, runc (cgroupfs), the bridge CNI config dir."""
    q = _toml_str
    return "\n".join([
        "version = 2",
        f"root = {q(NODE_STATE / 'containerd')}",
        f"state = {q(RUN_DIR / 'containerd-state')}",
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
        ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
        ' "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
        "[grpc]",
        f"  address = {q(CONTAINERD_SOCK)}",
        "[ttrpc]",
        f"  address = {q(str(CONTAINERD_SOCK) + '.ttrpc')}",
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {q(NODE_STATE / 'opt')}",
        '[plugins."io.containerd.grpc.v1.cri"]',
        f"  sandbox_image = {q(pause_image)}",
        '  stream_server_address = "127.0.0.1"',
        "  enable_cdi = false",
        # no CAP_SYS_RESOURCE on such machines: runc cannot lower oom_score_adj (-998 for sandboxes)
        "  restrict_oom_score_adj = true",
        '  [plugins."io.containerd.grpc.v1.cri".containerd]',
        '    snapshotter = "overlayfs"',
        '    default_runtime_name = "runc"',
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
        '      runtime_type = "io.containerd.runc.v2"',
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
        "        SystemdCgroup = false",
        f"        BinaryName = {q(shutil.which('runc') or '/usr/sbin/runc')}",
        '  [plugins."io.containerd.grpc.v1.cri".cni]',
        f"    bin_dir = {q(CNI_BIN)}",
        f"    conf_dir = {q(RUN_DIR / 'cni' / 'net.d')}",
        '  [plugins."io.containerd.grpc.v1.cri".registry]',
        f"    config_path = {q(RUN_DIR / 'registry-hosts')}",
        "",
    ])


def cni_config() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0", "name": "slime-node",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(RUN_DIR / "cni" / "ipam"),
                      "ranges": [[{"subnet": str(SUBNET), "gateway": NODE_IP}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "loopback"},
        ],
    }


def kubelet_config(ca_file: Path, healthz_port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "cgroupDriver": "cgroupfs", "failSwapOn": False, "failCgroupV1": False,
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
        "address": NODE_IP, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "AlwaysAllow"},
        "makeIPTablesUtilChains": False,
        "protectKernelDefaults": False,  # it sets vm.overcommit_memory & co; the journal restores them
        "oomScoreAdj": 0,
        "podLogsDir": str(RUN_DIR / "pod-logs"),
        # the cluster DNS (slime.devtools.clusterdns) on the node address; also for dnsPolicy Default
        # Pods: none of them ever asks the host's resolver
        "resolvConf": str(RUN_DIR / "resolv.conf"),
        "clusterDNS": [NODE_IP], "clusterDomain": "cluster.local",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False, "syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
        "maxPods": 40,
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables", "clusterCIDR": str(SUBNET), "hostnameOverride": NODE_NAME,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": f"127.0.0.1:{_free_port()}", "metricsBindAddress": f"127.0.0.1:{_free_port()}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # zeros: leave the conntrack sysctls alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
    }


class Node:
    """containerd, kubelet, kube-scheduler and kube-proxy; :meth:`start_runtime` then :meth:`join`.

    ``images`` are (name, docker-archive path) pairs imported into containerd's ``k8s.io``
    namespace when not there yet; ``pause_image`` must be one of them."""

    def __init__(self, bin_dir: Path, images: Sequence[tuple[str, Path]], pause_image: str,
                 *, timeout: float = 90.0, stop_timeout: float = 10.0) -> None:
        self.bin_dir = bin_dir
        self.images = list(images)
        self.pause_image = pause_image
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.log_dir = NODE_STATE / "logs"
        self.timings: dict[str, float] = {}
        self._procs: list[_Proc] = []
        self._journal: dict[str, Any] | None = None
        self._import: threading.Thread | None = None
        self._import_error: BaseException | None = None

    # -- public --------------------------------------------------------------------------------

    def start_runtime(self) -> None:
        """Host changes, containerd, and the image import (in the background)."""
        t = time.monotonic()
        if hostnet.needs_cleanup():
            log.warning("a previous test node was not cleaned up (crash?): cleaning up first")
            problems = self.stop()
            if problems:
                raise NodeError("could not clean up the previous node: " + "; ".join(problems))
        self._journal = hostnet.host_up()
        self.timings["host"] = time.monotonic() - t
        for d in ("cni/net.d", "registry-hosts/_default", "registry-hosts/docker.io", "pod-logs", "kubelet"):
            (RUN_DIR / d).mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "cni" / "net.d" / "10-slime.conflist").write_text(json.dumps(cni_config(), indent=1))
        (RUN_DIR / "resolv.conf").write_text(f"nameserver {NODE_IP}\noptions timeout:1 attempts:1\n")
        for registry in ("_default", "docker.io"):
            (RUN_DIR / "registry-hosts" / registry / "hosts.toml").write_text(
                f'server = "{NO_REGISTRY}"\n[host."{NO_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n')
        config = RUN_DIR / "containerd.toml"
        config.write_text(containerd_config(self.pause_image))
        t = time.monotonic()
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])
        self._wait(proc, "serving", self._containerd_alive, timeout=30)
        self.timings["containerd"] = time.monotonic() - t
        self._import = threading.Thread(target=self._import_images, name="image-import", daemon=True)
        self._import.start()

    def join(self, kubeconfig: Path, ca_file: Path) -> None:
        """kubelet, kube-scheduler, kube-proxy; returns once the Node is Ready and untainted and
        the images are imported."""
        from kubernetes import client, config

        t = time.monotonic()
        healthz = _free_port()
        (RUN_DIR / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(ca_file, healthz)))
        (RUN_DIR / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(kubeconfig)))
        b = self.bin_dir
        kubelet = self._spawn("kubelet", [
            str(b / "kubelet"), f"--config={RUN_DIR / 'kubelet.yaml'}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={RUN_DIR / 'kubelet'}", f"--cert-dir={RUN_DIR / 'kubelet' / 'pki'}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}", "--v=1",
        ])
        k = str(kubeconfig)
        self._spawn("kube-scheduler", [
            str(b / "kube-scheduler"), f"--kubeconfig={k}", f"--authentication-kubeconfig={k}",
            f"--authorization-kubeconfig={k}", "--leader-elect=false", "--bind-address=127.0.0.1",
            f"--secure-port={_free_port()}", "--v=1",
        ])
        self._spawn("kube-proxy", [str(b / "kube-proxy"), f"--config={RUN_DIR / 'kube-proxy.yaml'}", "--v=1"])
        api = client.CoreV1Api(config.new_client_from_config(config_file=k))
        self._wait(kubelet, "Ready", lambda: self._node_ready(api), timeout=self.timeout)
        self.timings["kubelet->ready"] = time.monotonic() - t
        t = time.monotonic()
        if self._import is not None:
            self._import.join()
        if self._import_error is not None:
            raise NodeError(f"image import failed: {self._import_error}") from self._import_error
        self.timings["images (wait)"] = time.monotonic() - t
        api.api_client.close()

    def stop(self) -> list[str]:
        """Stop everything and undo the host changes; returns problems met (empty = clean)."""
        for proc in reversed(self._procs):
            if proc.name != "containerd":
                stop_process(proc.popen, self.stop_timeout)
        problems = hostnet.node_down(kube_proxy=str(self.bin_dir / "kube-proxy"),
                                     restart_containerd=self._remove_pods)
        for proc in self._procs:
            stop_process(proc.popen, self.stop_timeout)
            proc.log_file.close()
        self._procs.clear()
        return problems

    def check_alive(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is not None:
                raise NodeError(f"{proc.name} exited with {proc.popen.returncode}; log tail:\n{proc.tail()}")

    def rss_bytes(self) -> dict[str, int]:
        return {proc.name: rss for proc in self._procs if (rss := process_rss(proc.popen.pid))}

    def pod_rss_bytes(self) -> dict[str, list[int]]:
        """RSS of the processes running in Pods, by command name (e.g. ``envoy``, ``python3``)."""
        out: dict[str, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if "/kubepods" not in (proc / "cgroup").read_text():
                    continue
                status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
                if "VmRSS" in status:
                    out.setdefault(status["Name"].strip(), []).append(int(status["VmRSS"].split()[0]) * 1024)
        return out

    def ctr(self, *args: str, timeout: float = 120) -> str:
        proc = subprocess.run(["ctr", "--address", str(CONTAINERD_SOCK), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    # -- internals -----------------------------------------------------------------------------

    def _import_images(self) -> None:
        try:
            t = time.monotonic()
            present = set(self.ctr("images", "ls", "-q").split())
            wanted = {name for name, _ in self.images}
            for name, archive in self.images:
                if name not in present:
                    self.ctr("images", "import", str(archive), timeout=600)
            # Earlier builds of the bed's images (a changed input gives a new tag), with the
            # sha256:<id> names CRI adds: containerd collects their content and snapshots once no
            # name refers to them. This containerd is the bed's own: only its images are there.
            refs = [line.split() for line in self.ctr("images", "ls").splitlines()[1:] if line.strip()]
            keep = {fields[2] for fields in refs if fields[0] in wanted}
            stale = [fields[0] for fields in refs if fields[2] not in keep]
            if stale and wanted:
                self.ctr("images", "rm", *stale)
            self.timings["image import"] = time.monotonic() - t
        except BaseException as e:  # reported by join()
            self._import_error = e

    def _containerd_alive(self) -> bool:
        if not CONTAINERD_SOCK.exists():
            return False
        return subprocess.run(["ctr", "--address", str(CONTAINERD_SOCK), "--timeout", "2s", "version"],
                              capture_output=True, check=False, timeout=10).returncode == 0

    def _remove_pods(self) -> None:
        """Stop and remove every pod through CRI (which runs CNI DEL and unmounts), then stop
        containerd. After a crash, containerd is started again: it re-attaches to the shims."""
        if not (RUN_DIR / "containerd-state").exists():
            return
        owned = next((p for p in self._procs if p.name == "containerd" and p.popen.poll() is None), None)
        if owned is None and not self._containerd_alive():
            config = RUN_DIR / "containerd.toml"
            if not config.exists():
                return
            self.log_dir.mkdir(parents=True, exist_ok=True)
            owned = self._spawn("containerd-cleanup", ["containerd", "--config", str(config)])
            self._wait(owned, "serving", self._containerd_alive, timeout=30)
        crictl = self.bin_dir / "crictl"
        if os.access(crictl, os.X_OK):
            subprocess.run([str(crictl), "--runtime-endpoint", f"unix://{CONTAINERD_SOCK}", "--timeout", "30s",
                            "rmp", "-fa"], capture_output=True, timeout=120, check=False)
        if owned is not None:
            stop_process(owned.popen, self.stop_timeout)

    def _node_ready(self, api: Any) -> bool:
        node = api.read_node(NODE_NAME)
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        return ready and not any(t.key.startswith("node.kubernetes.io/not-ready") for t in node.spec.taints or [])

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True, preexec_fn=die_with_parent)
        proc = _Proc(name, popen, log_path, log_file)
        self._procs.append(proc)
        journal = hostnet.read_journal() or self._journal
        if journal is not None:
            journal.setdefault("pids", {})[name] = [popen.pid, hostnet.proc_start_time(popen.pid)]
            hostnet.write_journal(journal)
        return proc

    def _wait(self, proc: _Proc, what: str, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if proc.popen.poll() is not None:
                raise NodeError(f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                                f"log {proc.log_path}:\n{proc.tail()}")
            try:
                if check():
                    return
            except Exception as e:  # not up yet
                last = e
            if time.monotonic() > deadline:
                raise NodeError(f"{proc.name}: not {what} after {timeout:.0f}s (last error: {last}); "
                                f"log {proc.log_path}:\n{proc.tail()}")
            time.sleep(0.2)


def default_bin_dir() -> Path:
    """Where hack/build-controlplane.sh puts the Kubernetes binaries (kube-proxy and crictl are
    used by the cleanup)."""
    from slime.devcluster import pinned_k8s_version

    env = os.environ.get("SLIME_CONTROLPLANE_BIN")
    return Path(env) if env else hostnet.cache_root() / "controlplane" / pinned_k8s_version()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slime.devtools.node",
                                     description="the local test node's host cleanup")
    parser.add_argument("command", choices=["down", "status"],
                        help="down: undo every host change of a node (after a crash); status: show the journal")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "status":
        print(json.dumps(hostnet.read_journal(), indent=1))
        return 0
    try:
        hostnet.preflight()
    except HostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    problems = Node(default_bin_dir(), [], "").stop()
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
