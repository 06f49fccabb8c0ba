"""`slime run` never prints a traceback for a user mistake: one line naming the problem, exit 1."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import yaml

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
}


def slime_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slime.cli", "run", "--standalone", *args], capture_output=True,
                          text=True, timeout=60, check=False, env=env)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_config_typo_names_the_module_and_field(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"name": "limiter", "kind": "limiter", "enable": True,
                                      "general": {"refrsh": "5s"}}))
    line = one_error_line(slime_run("--config", str(config), "--kubeconfig", str(tmp_path / "nope")))
    assert line == f"error: --config {config}: module 'limiter': general.refrsh: unknown field"


def test_missing_kubeconfig(tmp_path: Path) -> None:
    line = one_error_line(slime_run("--kubeconfig", str(tmp_path / "missing.kubeconfig")))
    assert "missing.kubeconfig: no such file" in line


def test_no_cluster_at_all(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    line = one_error_line(slime_run(env=env))
    assert "no cluster to talk to" in line


def test_port_in_use(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(slime_run("--kubeconfig", str(kubeconfig), "--metrics-addr", f"127.0.0.1:{port}",
                                        "--liveness", ""))
    assert "cannot listen" in line and str(port) in line


def test_liveness_port_in_use(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(KUBECONFIG))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(slime_run("--kubeconfig", str(kubeconfig), "--metrics-addr", "",
                                        "--liveness", f"http://127.0.0.1:{port}/healthz"))
    assert "cannot listen" in line and str(port) in line
