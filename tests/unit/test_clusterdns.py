"""The bed's cluster DNS over a real UDP socket on loopback: Service names only, never forwarded."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from slime.devtools.clusterdns import NXDOMAIN, TYPE_A, TYPE_AAAA, ClusterDNS

SERVICES = {("reviews", "demo"): "10.0.0.42"}


def query(port: int, name: str, qtype: int = TYPE_A) -> tuple[int, int, list[str]]:
    """(id, rcode, A answers) of one query sent to 127.0.0.1:port."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + question, ("127.0.0.1", port))
        data = s.recv(512)
    qid, flags, _, ancount = struct.unpack("!HHHH", data[:8])
    answers, pos = [], 12 + len(question)
    for _ in range(ancount):
        _, rtype, _, _, length = struct.unpack("!HHHIH", data[pos:pos + 12])
        if rtype == TYPE_A:
            answers.append(socket.inet_ntoa(data[pos + 12:pos + 12 + length]))
        pos += 12 + length
    return qid, flags & 0xF, answers


@pytest.fixture
def dns() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ClusterDNS("127.0.0.1", lambda name, ns: SERVICES.get((name, ns)), port=port):
        yield port


def test_a_service_name_resolves_to_its_cluster_ip(dns: int) -> None:
    assert query(dns, "reviews.demo.svc.cluster.local") == (0x1234, 0, ["10.0.0.42"])
    assert query(dns, "REVIEWS.demo.svc.cluster.local")[2] == ["10.0.0.42"]


def test_aaaa_of_a_service_is_empty_but_not_an_error(dns: int) -> None:
    assert query(dns, "reviews.demo.svc.cluster.local", TYPE_AAAA) == (0x1234, 0, [])


@pytest.mark.parametrize("name", ["nope.demo.svc.cluster.local", "example.com", "demo.svc.cluster.local",
                                  "a.b.c.svc.cluster.local", "reviews.demo.svc.cluster.local.example.com"])
def test_anything_else_is_nxdomain(dns: int, name: str) -> None:
    assert query(dns, name) == (0x1234, NXDOMAIN, [])


def test_garbage_is_refused_without_crashing(dns: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"\x12\x34garbage", ("127.0.0.1", dns))
        assert struct.unpack("!H", s.recv(512)[2:4])[0] & 0xF == 1  # FORMERR
    assert query(dns, "reviews.demo.svc.cluster.local")[2] == ["10.0.0.42"]  # still serving
