"""The host side of the test node: a private bridge, sysctls, firewall guards, and their undoing.

Every change to the host goes through a journal (``/run/slime-node/journal.json``) written *before*
the change, so that :func:`node_down` can undo all of it after a clean stop, a Ctrl-C, or a crash
(SIGKILL of the test run): the next :func:`host_up` runs it first when it finds a journal.

What changes on the host while a node runs, and how it is undone:

* bridge ``slime0`` with ``10.244.99.1/24`` (pods get 10.244.99.2-254), and a route of the
  Service CIDR to it (a ClusterIP never goes to the default route): deleted;
* sysctls (``ip_forward`` by the CNI bridge plugin; ``vm.overcommit_memory``, ``kernel.panic``,
  ``kernel.panic_on_oops`` by the kubelet): written back to the journal's values;
* iptables: two guard rules (pods' packets are never forwarded off the bridge, and reach the host
  only on the node address), kube-proxy's ``KUBE-*`` chains: removed, and so are the nf_tables
  tables that did not exist before;
* mounts under the node's directories and the pods' network namespaces: unmounted, deleted;
* cgroups ``kubepods`` (kubelet) and ``k8s.io`` (containerd): removed;
* host paths the kubelet and containerd use whatever their config says (``/var/lib/kubelet``,
  ``/var/log/containers``, ``/var/lib/cni``, ``/run/containerd``, ``/run/netns``): removed when they
  did not exist before.

Processes are stopped by :mod:`slime.devtools.node`, which records their pids in the journal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

def cache_root() -> Path:
    """``$XDG_CACHE_HOME/slime`` (``~/.cache/slime``): builds and images kept between runs."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slime"


BRIDGE = "slime0"
SUBNET = ipaddress.IPv4Network("10.244.99.0/24")
NODE_IP = "10.244.99.1"
RUN_DIR = Path("/run/slime-node")  # sockets, kubelet root, pod logs, CNI state: removed at node-down
NODE_STATE = cache_root() / "node"  # containerd's root (imported images) and the logs: kept
JOURNAL = RUN_DIR / "journal.json"
GUARD_COMMENT = "slime-node-guard"

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "net/ipv4/conf/all/route_localnet",
)
# Paths used by the kubelet / containerd / CNI whatever their configuration says.
FIXED_HOST_PATHS = (
    "/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/containerd", "/run/netns",
)
CGROUP_NAMES = ("kubepods", "k8s.io")


class HostError(RuntimeError):
    """The host cannot run the test node (not root, a tool missing) or a host change failed."""


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise HostError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


# ---------------------------------------------------------------------------------------------
# The journal


def read_journal() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(JOURNAL.read_text())
        return data
    except FileNotFoundError:
        return None
    except ValueError:  # a write cut short: take what the host shows
        log.warning("unreadable %s; cleaning up without it", JOURNAL)
        return {}


def write_journal(state: dict[str, Any]) -> None:
    """Atomically (rename) and durably (fsync) record ``state``."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = JOURNAL.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(JOURNAL)


def record(state: dict[str, Any], key: str, value: Any) -> None:
    state[key] = value
    write_journal(state)


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _nft_tables() -> list[str]:
    if shutil.which("nft") is None:
        return []
    out = run("nft", "list", "tables", check=False).stdout
    return sorted(line.removeprefix("table ").strip() for line in out.splitlines() if line.startswith("table "))


def preflight() -> None:
    """Raise HostError naming what is missing for a node on this host."""
    if os.geteuid() != 0:
        raise HostError("the test node needs root (it creates a bridge, network namespaces and cgroups)")
    missing = [t for t in ("ip", "iptables", "nft", "containerd", "runc", "ctr", "mount", "umount")
               if shutil.which(t) is None]
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("/usr/lib/cni/bridge (containernetworking-plugins)")
    if missing:
        raise HostError("missing for the test node: " + ", ".join(missing) + " (make system-deps installs them)")


# ---------------------------------------------------------------------------------------------
# Up


def needs_cleanup() -> bool:
    """A journal or the bridge is there: a node is running or was not cleaned up (crash)."""
    return JOURNAL.exists() or Path(f"/sys/class/net/{BRIDGE}").exists()


def host_up() -> dict[str, Any]:
    """Undo leftovers of a previous node, then journal and make this node's host changes.

    Returns the journal (the node launcher adds its pids to it)."""
    preflight()
    if needs_cleanup():
        log.warning("a previous test node was not cleaned up (crash?): cleaning up first")
        node_down()
    state: dict[str, Any] = {"version": 1, "started": time.time(), "pids": {}}
    # Everything we may change is recorded before the first change.
    state["sysctls"] = {s: sysctl_path(s).read_text().strip() for s in SYSCTLS if sysctl_path(s).exists()}
    state["nft_tables"] = _nft_tables()
    state["fixed_paths_existed"] = [p for p in FIXED_HOST_PATHS if os.path.lexists(p)]
    write_journal(state)

    # The bridge exists before the kubelet (it is the node IP) and the CNI plugin reuses it.
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{NODE_IP}/{SUBNET.prefixlen}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    # ClusterIPs are routed to the bridge too: a packet to one that kube-proxy does not (yet) know
    # then dies here instead of going out through the default route (it goes with the bridge)
    from slime.devcluster import SERVICE_CIDR

    run("ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP)
    # The CNI bridge plugin (isGateway) turns on forwarding; do it here, with the guards first.
    for rule in guard_rules():
        run("iptables", "-w", "-I", *rule)
    sysctl_path("net/ipv4/ip_forward").write_text("1")
    if sysctl_path("net/bridge/bridge-nf-call-iptables").exists():  # Pod->ClusterIP->Pod on one bridge
        sysctl_path("net/bridge/bridge-nf-call-iptables").write_text("1")
    return state


def guard_rules() -> list[list[str]]:
    """iptables rules (chain first) that keep pod traffic on this machine.

    FORWARD: a packet from the bridge goes only back to the bridge (pod to pod, pod to ClusterIP
    to pod); nothing is routed off the machine, e.g. a pod's DNS query to the host's resolver.
    INPUT: pods reach the host only on the node address (apiserver, istiod, Prometheus, kubelet)."""
    tag = ["-m", "comment", "--comment", GUARD_COMMENT]
    return [
        ["FORWARD", "1", "-i", BRIDGE, "!", "-o", BRIDGE, *tag, "-j", "DROP"],
        ["INPUT", "1", "-i", BRIDGE, "!", "-d", NODE_IP, *tag, "-j", "DROP"],
    ]


# ---------------------------------------------------------------------------------------------
# Down


def node_down(kube_proxy: str | None = None, restart_containerd: Any = None) -> list[str]:
    """Undo every host change of a node (idempotent; also with no or a damaged journal).

    ``restart_containerd`` is a callable the node launcher passes to restart containerd when its
    pods are still there (it re-attaches to their shims, so CRI can delete them with CNI DEL).
    Returns the problems met (logged too); an empty list means a clean host."""
    state = read_journal() or {}
    problems: list[str] = []

    def step(what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # one failed step must not stop the others
            problems.append(f"{what}: {e}")
            log.warning("node-down: %s: %s", what, e)

    pids = state.get("pids", {})
    step("processes", _kill_recorded, {n: v for n, v in pids.items() if not n.startswith("containerd")})
    if restart_containerd is not None:
        step("pods", restart_containerd)
    step("containerd", _kill_recorded, pids)
    step("containers", _kill_cgroup_tasks)
    step("mounts", _unmount_all)
    step("network namespaces", _delete_netns)
    step("links", _delete_links)
    step("cgroups", _remove_cgroups)
    step("sysctls", _restore_sysctls, state.get("sysctls", {}))
    step("iptables", _clean_iptables, kube_proxy, state.get("nft_tables"))
    step("paths", _remove_paths, state.get("fixed_paths_existed"))
    if not problems:
        with contextlib.suppress(FileNotFoundError):
            JOURNAL.unlink()
        with contextlib.suppress(OSError):
            RUN_DIR.rmdir()
    return problems


def proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a recorded process from a later one with the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_recorded(pids: dict[str, list[Any]]) -> None:
    alive = {name: int(pid) for name, (pid, start) in pids.items() if proc_start_time(int(pid)) == start}
    for pid in alive.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    deadline = time.monotonic() + 10
    while alive and time.monotonic() < deadline:
        alive = {n: p for n, p in alive.items() if proc_start_time(p) is not None and not _zombie(p)}
        time.sleep(0.1)
    for pid in alive.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def node_mount_roots() -> tuple[str, ...]:
    return (str(NODE_STATE) + "/", str(RUN_DIR) + "/", "/run/netns/cni-", "/var/lib/kubelet", "/run/containerd/")


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point.startswith(p) for p in prefixes):
            points.append(point)
    return points


def _unmount_all() -> None:
    roots = node_mount_roots()
    for _ in range(5):  # stacked mounts: repeat until none is left
        points = _mounts_under(roots)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):  # deepest first
            run("umount", "-l", point, check=False)
    left = _mounts_under(roots)
    if left:
        raise HostError(f"still mounted: {left}")


def _delete_netns() -> None:
    netns = Path("/run/netns")
    if netns.is_dir():
        for ns in netns.glob("cni-*"):
            run("ip", "netns", "delete", ns.name, check=False)
            with contextlib.suppress(OSError):
                ns.unlink()


def _delete_links() -> None:
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        # veths of pods whose netns is gone went with it; any left on the bridge go now
        for port in Path(f"/sys/class/net/{BRIDGE}/brif").glob("*"):
            run("ip", "link", "delete", port.name, check=False)
        run("ip", "link", "delete", BRIDGE)


def _cgroup_dirs() -> Iterator[Path]:
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return
    for hierarchy in [root, *(p for p in root.iterdir() if p.is_dir())]:
        for name in CGROUP_NAMES:
            top = hierarchy / name
            if top.is_dir():
                yield top


def _kill_cgroup_tasks() -> None:
    """SIGKILL what still runs in the node's cgroups (containers whose shim lost its containerd)."""
    for _ in range(50):
        pids = {int(pid) for top in _cgroup_dirs() for procs in top.rglob("cgroup.procs")
                for pid in _read(procs).split()}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.1)
    raise HostError(f"processes left in the node's cgroups: {sorted(pids)[:10]}")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove_cgroups() -> None:
    left = []
    for top in _cgroup_dirs():
        # depth-first: a cgroup can be removed only once it has no children
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        try:
            top.rmdir()
        except OSError as e:
            left.append(f"{top} ({e.strerror})")
    if left:
        raise HostError("cgroups left: " + ", ".join(left))


def _restore_sysctls(saved: dict[str, str]) -> None:
    for name, value in saved.items():
        path = sysctl_path(name)
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value)


def _clean_iptables(kube_proxy: str | None, tables_before: list[str] | None) -> None:
    if shutil.which("iptables") is None:
        return
    if kube_proxy and os.access(kube_proxy, os.X_OK):
        run(kube_proxy, "--cleanup", check=False, timeout=60)
    for binary in ("iptables", "ip6tables"):
        if shutil.which(binary) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            lines = run(binary + "-save", "-t", table, check=False).stdout.splitlines()
            # our guards, and jumps into kube-proxy's and the kubelet's chains (KUBE-FIREWALL...)
            for line in lines:
                if line.startswith("-A ") and not line.startswith("-A KUBE-") and (
                        GUARD_COMMENT in line or " -j KUBE-" in line):
                    run(binary, "-w", "-t", table, "-D", *shlex.split(line[3:]), check=False)
            chains = [line[1:].split()[0] for line in lines if line.startswith(":KUBE-")]
            for flag in ("-F", "-X"):  # chains jump to each other: flush all, then delete
                for chain in chains:
                    run(binary, "-w", "-t", table, flag, chain, check=False)
    if tables_before is not None and shutil.which("nft"):
        for table in _nft_tables():
            if table not in tables_before:
                run("nft", "delete", "table", *table.split(), check=False)
    left = [line for t in ("filter", "nat")
            for line in run("iptables-save", "-t", t, check=False).stdout.splitlines()
            if GUARD_COMMENT in line or "KUBE-" in line]
    if left:
        raise HostError(f"iptables rules left: {left[:5]}")


def _remove_paths(existed: list[str] | None) -> None:
    if RUN_DIR.is_dir():  # everything but the journal, which goes last
        for child in RUN_DIR.iterdir():
            if child == JOURNAL:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink()
    if existed is None:  # no journal: remove only what is empty or ours
        for p in FIXED_HOST_PATHS:
            with contextlib.suppress(OSError):
                _remove_if_empty_tree(Path(p))
        return
    for p in FIXED_HOST_PATHS:
        if p not in existed and os.path.lexists(p):
            shutil.rmtree(p, ignore_errors=True)


def _remove_if_empty_tree(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for d in sorted((x for x in path.rglob("*") if x.is_dir() and not x.is_symlink()),
                    key=lambda x: len(x.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    path.rmdir()
