"""istiod (``pilot-discovery``) against the dev cluster, configured for plain Envoy sidecars.

Built with ``istioctl`` from the pinned ``istio.io/istio`` module by ``hack/build-istio.sh``. It runs
as a host process: plaintext xDS on the node address (Pods' sidecars connect to it), everything
else on 127.0.0.1 (HTTP debug + ``/ready``, monitoring, the validating webhook's HTTPS).

Settings a plain Envoy (no Istio extensions) needs: ``PILOT_ENABLE_ALPN_FILTER=false``,
``PILOT_ENABLE_METADATA_EXCHANGE=false``, mesh ``enableAutoMtls: false``, and a mesh-wide
PeerAuthentication ``DISABLE`` (else listeners wait for SDS secrets forever). istiod's own CA is
off (``ENABLE_CA_SERVER=false``); the webhook gets a certificate from a CA made here, and a
ValidatingWebhookConfiguration sends Istio kinds to it, so ``kubectl apply`` of an invalid
EnvoyFilter or Sidecar is refused as in a real mesh.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from slime.devcluster import HACK_DIR, _issue, _pem_cert, _pem_key, read_versions_env
from slime.devtools import die_with_parent, process_rss, stop_process

WEBHOOK_NAME = "slime-bed-istio-validation"
ISTIO_VERSION_META = "1.31.0"  # what the sidecars report (the pinned module is the 1.31 line)
ENV = {
    "ENABLE_CA_SERVER": "false",
    "POD_NAMESPACE": "istio-system", "POD_NAME": "istiod-local", "REVISION": "default",
    "PILOT_ENABLE_ALPN_FILTER": "false", "PILOT_ENABLE_METADATA_EXCHANGE": "false",
}
# A patch istiod's validation refuses (an unknown @type): used to see the webhook in force.
_BAD_ENVOYFILTER = {
    "apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
    "metadata": {"name": "slime-bed-webhook-probe", "namespace": "istio-system"},
    "spec": {"configPatches": [{
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_INBOUND"},
        "patch": {"operation": "INSERT_BEFORE", "value": {
            "name": "probe", "typed_config": {"@type": "type.googleapis.com/slime.bed.DoesNotExist"}}}}]},
}


class IstiodError(RuntimeError):
    """istiod or istioctl could not be built, started, or asked."""


def find_istio_bin(build: bool = True) -> Path:
    """Directory holding pilot-discovery and istioctl ($SLIME_ISTIO_BIN, else hack/build-istio.sh,
    which waits for a running build and builds only what is missing)."""
    env = os.environ.get("SLIME_ISTIO_BIN")
    if env and all(os.access(Path(env) / b, os.X_OK) for b in ("pilot-discovery", "istioctl")):
        return Path(env)
    script = HACK_DIR / "build-istio.sh"
    if not build or not script.is_file():
        raise IstiodError(f"pilot-discovery/istioctl not found: set SLIME_ISTIO_BIN or run {script}")
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise IstiodError(f"{script} failed (exit {proc.returncode})")
    return Path(lines[-1])


def mesh_config(xds_address: str) -> dict[str, Any]:
    return {
        "rootNamespace": "istio-system", "trustDomain": "cluster.local",
        "enableTracing": False,
        "enableAutoMtls": False,  # else outbound clusters wait on SDS from a non-existent sds-grpc cluster
        "accessLogFile": "",
        "defaultConfig": {"discoveryAddress": xds_address},
    }


PEER_AUTHENTICATION = {
    "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
    "metadata": {"name": "default", "namespace": "istio-system"},
    "spec": {"mtls": {"mode": "DISABLE"}},
}


@dataclass
class ValidateResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def istioctl_validate(istioctl: Path, objects: Iterable[Mapping[str, Any]]) -> ValidateResult:
    """``istioctl validate`` (offline: the same validation as istiod's webhook) of the objects."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="slime-validate-") as f:
        yaml.safe_dump_all([dict(o) for o in objects], f)
        f.flush()
        proc = subprocess.run([str(istioctl), "validate", "-f", f.name], capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "KUBECONFIG": "/nonexistent"})
    return ValidateResult(proc.returncode, (proc.stdout + proc.stderr).replace(f.name, "<objects>"))


class Istiod:
    """A pilot-discovery process; a context manager. ``xds_address`` is what sidecars dial."""

    def __init__(self, kubeconfig: Path, bin_dir: Path, *, xds_host: str = "127.0.0.1",
                 timeout: float = 60.0, kubectl: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.bin_dir = bin_dir
        self.xds_host = xds_host
        self.timeout = timeout
        self.kubectl_bin = kubectl or shutil.which("kubectl") or "kubectl"
        self.timings: dict[str, float] = {}
        self.xds_address = ""
        self.http_url = ""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def istioctl(self) -> Path:
        return self.bin_dir / "istioctl"

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise IstiodError("istiod not started")
        return self._dir / "istiod.log"

    def __enter__(self) -> Istiod:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Spawn istiod (from the calling thread: it dies with it); then :meth:`wait_ready`."""
        self._dir = Path(tempfile.mkdtemp(prefix="slime-istiod-"))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slime-bed-istiod-ca")]), ca_key, None, ca=True)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "istiod")]), key, (ca, ca_key), server=True,
                      sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                            x509.DNSName("istiod.istio-system.svc")])
        files = {"ca.crt": _pem_cert(ca), "tls.crt": _pem_cert(cert), "tls.key": _pem_key(key)}
        for name, data in files.items():
            (self._dir / name).write_bytes(data)
        self._ca_pem = files["ca.crt"]
        self._spawn()

    def _spawn(self) -> None:
        assert self._dir is not None
        grpc, http, https, mon, secure = _distinct_free_ports([self.xds_host] + ["127.0.0.1"] * 4)
        self.xds_address = f"{self.xds_host}:{grpc}"
        self.http_url = f"http://127.0.0.1:{http}"
        self.webhook_url = f"https://127.0.0.1:{https}/validate"
        (self._dir / "mesh.yaml").write_text(yaml.safe_dump(mesh_config(self.xds_address)))
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [str(self.bin_dir / "pilot-discovery"), "discovery", f"--kubeconfig={self.kubeconfig}",
             f"--meshConfig={self._dir / 'mesh.yaml'}", f"--networksConfig={self._dir / 'no-networks.yaml'}",
             "--domain=cluster.local", "--clusterID=Kubernetes",
             f"--grpcAddr={self.xds_address}", f"--secureGRPCAddr=127.0.0.1:{secure}",
             f"--httpAddr=127.0.0.1:{http}", f"--httpsAddr=127.0.0.1:{https}",
             f"--monitoringAddr=127.0.0.1:{mon}", "--ctrlz_port=0",
             f"--tlsCertFile={self._dir / 'tls.crt'}", f"--tlsKeyFile={self._dir / 'tls.key'}",
             f"--caCertFile={self._dir / 'ca.crt'}", "--log_output_level=all:warn"],
            env={**os.environ, **ENV}, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self._dir, start_new_session=True, preexec_fn=die_with_parent)

    def wait_ready(self) -> None:
        """Wait for /ready, apply the PeerAuthentication, register the webhook and wait until it refuses.

        The ports are picked free and then bound by istiod: if another process took one meanwhile,
        istiod is started again on new ones (call this before anything uses ``xds_address``)."""
        for attempt in range(3):
            try:
                self._wait("/ready", lambda: self._http_status("/ready") == 200)
                break
            except IstiodError:
                if attempt == 2 or "address already in use" not in self.log_tail(5):
                    raise
                self._spawn()
        self.timings["ready"] = time.monotonic() - self._t0
        t = time.monotonic()
        self.apply([PEER_AUTHENTICATION, self.webhook_configuration()])
        self._wait("the validating webhook in force", self._webhook_refuses)
        self.timings["webhook"] = time.monotonic() - t

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, 10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def webhook_configuration(self) -> dict[str, Any]:
        return {
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            # no istio.io/rev label: istiod's webhook controller leaves it alone
            "metadata": {"name": WEBHOOK_NAME},
            "webhooks": [{
                "name": "validation.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 10,
                "clientConfig": {"url": self.webhook_url, "caBundle": base64.b64encode(self._ca_pem).decode()},
                "rules": [{"operations": ["CREATE", "UPDATE"], "apiVersions": ["*"], "resources": ["*"],
                           "apiGroups": ["networking.istio.io", "security.istio.io", "telemetry.istio.io",
                                         "extensions.istio.io"]}],
            }],
        }

    def apply(self, objects: Iterable[Mapping[str, Any]], dry_run: bool = False) -> subprocess.CompletedProcess[str]:
        """``kubectl apply --server-side`` (raises IstiodError with kubectl's message on refusal)."""
        argv = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", "apply", "--server-side",
                "--force-conflicts", "--field-manager=slime-bed", "-f", "-"]
        if dry_run:
            argv.append("--dry-run=server")
        proc = subprocess.run(argv, input=yaml.safe_dump_all([dict(o) for o in objects]), capture_output=True,
                              text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise IstiodError(proc.stderr.strip())
        return proc

    def debug(self, endpoint: str, **params: str) -> Any:
        """JSON of istiod's ``/debug/<endpoint>`` (e.g. ``syncz``, ``configz``, ``registryz``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.http_url}/debug/{endpoint}{query}", timeout=10) as resp:
            return json.load(resp)

    def syncz(self) -> list[dict[str, Any]]:
        """Per connected proxy: sent/acked nonces per type, and ``lastError``-like fields on NACK."""
        data = self.debug("syncz")
        return list(data or [])

    def check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise IstiodError(f"istiod is not running; log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError, IstiodError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def rss_bytes(self) -> int:
        return process_rss(self._proc.pid) if self._proc is not None else 0

    # -- internals -----------------------------------------------------------------------------

    def _http_status(self, path: str) -> int:
        with urllib.request.urlopen(self.http_url + path, timeout=2) as resp:
            return int(resp.status)

    def _webhook_refuses(self) -> bool:
        try:
            self.apply([_BAD_ENVOYFILTER], dry_run=True)
        except IstiodError as e:
            return "denied the request" in str(e)
        return False

    def _wait(self, what: str, check: Any) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            self.check_alive()
            with contextlib.suppress(Exception):
                if check():
                    return
            if time.monotonic() > deadline:
                raise IstiodError(f"istiod: not {what} after {self.timeout:.0f}s; log tail:\n{self.log_tail()}")
            time.sleep(0.2)


def _distinct_free_ports(hosts: list[str]) -> list[int]:
    """One free port per host, all different (the sockets are held until all are picked)."""
    import socket

    socks = []
    try:
        for host in hosts:
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def istio_version() -> str:
    return read_versions_env()["ISTIO_VERSION"]
