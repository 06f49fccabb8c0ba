"""Pure parts of slime.devcluster: PKI, kubeconfig, pinned versions (no processes)."""

import base64
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from slime import devcluster


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_pki_chain_and_identities(tmp_path: Path) -> None:
    pki = devcluster.generate_pki(tmp_path)
    ca, srv, admin = _cert(pki.ca_cert), _cert(pki.serving_cert), _cert(pki.admin_cert)
    srv.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    sans = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    eku = x509.ExtendedKeyUsage
    assert ExtendedKeyUsageOID.SERVER_AUTH in srv.extensions.get_extension_for_class(eku).value
    orgs = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in admin.extensions.get_extension_for_class(eku).value
    assert b"PRIVATE KEY" in pki.sa_key.read_bytes() and b"PUBLIC KEY" in pki.sa_pub.read_bytes()
    assert pki.admin_key.stat().st_mode & 0o077 == 0


def test_kubeconfig_embeds_pki(tmp_path: Path) -> None:
    pki = devcluster.generate_pki(tmp_path)
    cfg = yaml.safe_load(yaml.safe_dump(devcluster.admin_kubeconfig("https://127.0.0.1:6443", pki)))
    cluster = cfg["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == pki.ca_cert.read_bytes()
    assert base64.b64decode(cfg["users"][0]["user"]["client-key-data"]) == pki.admin_key.read_bytes()
    assert cfg["current-context"] == cfg["contexts"][0]["name"]


def test_pinned_versions(tmp_path: Path) -> None:
    gomod = tmp_path / "go.mod"
    gomod.write_text("module x\n\nrequire (\n\tk8s.io/kubernetes v1.2.3 // indirect\n)\n")
    assert devcluster.pinned_k8s_version(gomod) == "v1.2.3"
    env = tmp_path / "versions.env"
    env.write_text("# c\nISTIO_API_VERSION=v1.31.1\nX = \"y\"\n")
    assert devcluster.read_versions_env(env) == {"ISTIO_API_VERSION": "v1.31.1", "X": "y"}
    assert devcluster.pinned_k8s_version().startswith("v1.")  # the repo's own pin parses


def test_free_port_is_bindable() -> None:
    import socket

    port = devcluster.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
