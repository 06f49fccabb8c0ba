"""Shared fixtures. Tests under tests/integration are marked `integration` and get a real local
control plane (etcd + kube-apiserver + kube-controller-manager) started once per session.
Tests under tests/e2e are marked `e2e` and share one real mesh test bed (`mesh_bed`: a node,
istiod, sidecars, the operator in a Pod; see slime/meshbed.py)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from slime.devcluster import DevCluster
    from slime.meshbed import MeshBed

REPO = Path(__file__).resolve().parents[1]
# The test module (tests/modules/echo) joins the registry for the whole session, subprocesses too.
os.environ["SLIME_EXTRA_MODULES"] = "tests.modules.echo"
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
# gRPC (the lazyload module's access log server runs in this process in some tests) installs fork
# handlers that restart its poller thread in a forked child. A subprocess started with a preexec_fn
# (die_with_parent) is forked, not vfork'ed, and closes the inherited fds before exec, the poller's
# epoll fd included: the poller aborts the child on EBADF before Envoy (or anything) starts
# ("epoll_wait error: Bad file descriptor", grpc/grpc#43055; about 2 % of spawns here). No test uses
# gRPC in a forked child, so fork support is off, before anything imports grpc.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
INTEGRATION_DIR = REPO / "tests" / "integration"
E2E_DIR = REPO / "tests" / "e2e"

# Filled at collection time (outside any per-test timeout, since a first build takes many minutes).
_controlplane: dict[str, Any] = {"bin": None, "error": None}
_helm: dict[str, Any] = {"bin": None, "error": None}
_bed: dict[str, Any] = {"istio_bin": None, "error": None, "istio_error": None}
_report: list[str] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite golden output files (tests/golden) instead of comparing")


def pytest_configure(config: pytest.Config) -> None:
    from tests.compat import COMPAT, MISSING

    # Without it, the compat tests skip; under CI that would hide them, so it is an error there.
    if not COMPAT.is_dir():
        if os.environ.get("CI") == "true":
            raise pytest.UsageError(MISSING)
        _report.append(MISSING)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in item.path.parents:
            item.add_marker(pytest.mark.integration)
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    # The e2e tier last: the faster tiers report first, and they never share the machine with the
    # mesh bed's node, istiod and Pods (started on first use, stopped at the session's end).
    items[:] = [i for i in items if E2E_DIR not in i.path.parents] + [i for i in items if E2E_DIR in i.path.parents]


def pytest_collection_finish(session: pytest.Session) -> None:
    # Only after -m/-k deselection: build/find binaries only if a test will use the cluster.
    if session.config.option.collectonly:
        return
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "helm_bin" in used:
        from tests.helm import HelmUnavailable, find_helm

        capture = session.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            try:
                _helm["bin"] = find_helm()
            except HelmUnavailable as e:
                _helm["error"] = str(e)
    if not used & {"dev_cluster", "mesh_bed", "istio_bin"}:
        return
    from slime.devcluster import DevClusterError, find_controlplane_bin

    capture = session.config.pluginmanager.get_plugin("capturemanager")
    ctx = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with ctx:  # let a first (long) build show its progress
        try:
            _controlplane["bin"] = find_controlplane_bin()
        except DevClusterError as e:
            _controlplane["error"] = str(e)
        if used & {"mesh_bed", "istio_bin"}:
            _build_bed_prerequisites(bed="mesh_bed" in used)


def _build_bed_prerequisites(bed: bool) -> None:
    """istiod/istioctl, and for the bed the host tools and the images (outside any test timeout)."""
    import time

    from slime.devtools import hostnet, images
    from slime.devtools.istiod import IstiodError, find_istio_bin

    t = time.monotonic()
    try:
        _bed["istio_bin"] = find_istio_bin()
    except IstiodError as e:
        _bed["istio_error"] = _bed["error"] = str(e)
        return
    _report.append(f"istiod/istioctl: {time.monotonic() - t:.0f}s (build or cache)")
    if not bed or _controlplane["error"]:
        _bed["error"] = _bed["error"] or _controlplane["error"]
        return
    try:
        hostnet.preflight()
        t = time.monotonic()
        built = images.build_images()
        _report.append(f"bed images: {time.monotonic() - t:.0f}s; built "
                       + (", ".join(f"{k} {v:.0f}s" for k, v in built.timings.items()) or "none (cached)"))
    except (hostnet.HostError, images.ImageError) as e:
        _bed["error"] = str(e)


def _unavailable(reason: str, what: str = "local control plane") -> None:
    msg = f"{what} unavailable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def crd_files() -> list[Path]:
    """Every registered module's CRDs (the test module's too) plus Istio's pinned bundle."""
    from slime.crds import crd_files as generated
    from slime.devcluster import istio_crds

    return [*generated(), istio_crds()]


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    from slime.devcluster import DevCluster, DevClusterError

    bin_dir = _controlplane["bin"]
    if bin_dir is None:
        _unavailable(_controlplane["error"] or "binaries were not looked up")
    try:
        crds = crd_files()
    except DevClusterError as e:
        _unavailable(str(e))
    with DevCluster(crds, bin_dir=bin_dir) as cluster:
        _report.append("dev cluster start: " + ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items()))
        yield cluster
        rss = cluster.rss_bytes()
        _report.append("dev cluster RSS at teardown: "
                       + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()))


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Real Helm, found (or built) at collection time, outside any test's timeout."""
    if _helm["bin"] is None:
        msg = f"helm unavailable: {_helm['error'] or 'not looked up'}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    path: Path = _helm["bin"]
    return path


@pytest.fixture(scope="session")
def kubeconfig(dev_cluster: DevCluster) -> Path:
    return dev_cluster.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(kubeconfig: Path) -> Iterator[ApiClient]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


@pytest.fixture
def namespace(k8s_api: ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(k8s_api)
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as e:
        if e.status != 404:
            raise


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _report:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def istio_bin() -> Path:
    """The directory of pilot-discovery and istioctl (built by hack/build-istio.sh)."""
    if _bed["istio_bin"] is None:
        _unavailable(_bed["istio_error"] or "not looked up", "istioctl")
    path: Path = _bed["istio_bin"]
    return path


@pytest.fixture(scope="session")
def mesh_bed() -> Iterator[MeshBed]:
    """One real mesh test bed for the whole session (see slime/meshbed.py)."""
    from slime.devtools.images import IMAGES_DIR, disk_usage
    from slime.devtools.node import NODE_STATE
    from slime.meshbed import MeshBed

    if _bed["error"] or _bed["istio_bin"] is None:
        _unavailable(_bed["error"] or "prerequisites were not looked up", "mesh test bed")
    with MeshBed() as bed:
        _report.append("mesh bed start: " + ", ".join(f"{k} {v:.1f}s" for k, v in bed.timings.items()))
        yield bed
        rss = bed.rss_bytes()
        _report.append("mesh bed RSS at teardown: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()))
        _report.append(f"mesh bed disk: images {disk_usage(IMAGES_DIR) / 2**20:.0f} MiB, "
                       f"containerd {disk_usage(NODE_STATE) / 2**20:.0f} MiB")
