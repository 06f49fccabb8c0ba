"""The cluster DNS of the mesh test bed: Service names to ClusterIPs, and nothing else.

A real cluster resolves ``<service>.<namespace>.svc.cluster.local`` (and, through the Pods' search
list, ``kubernetes.default.svc``, which in-cluster clients such as kopf dial). This is a minimal
UDP DNS server for that, on the node address port 53 (the kubelet's ``clusterDNS``), in a thread
of the process that runs the bed. A name outside ``svc.<domain>`` gets NXDOMAIN: no query is ever
forwarded, so Pods never reach the host's resolver. Answers come from a ``lookup`` callable
(Service name, namespace) -> ClusterIP or None, cached for a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
TTL = 5


def parse_query(data: bytes) -> tuple[int, int, str, int, int, bytes]:
    """(id, flags, name, qtype, qclass, raw question) of a single-question query; ValueError if not one."""
    if len(data) < 12:
        raise ValueError("short packet")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1 or flags & 0x8000:
        raise ValueError("not a single-question query")
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        pos += 1
        if length == 0:
            break
        labels.append(data[pos:pos + length].decode("ascii", "replace").lower())
        pos += length
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos:pos + 4])
    return qid, flags, ".".join(labels), qtype, qclass, data[12:pos + 4]


def build_response(qid: int, flags: int, question: bytes, rcode: int, address: str | None) -> bytes:
    answers = 1 if address else 0
    header = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1 if question else 0, answers, 0, 0)
    body = question
    if address:
        # the name is the question's (a pointer to offset 12)
        body += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + socket.inet_aton(address)
    return header + body


class ClusterDNS:
    """A UDP DNS server answering A queries for ``<svc>.<ns>.svc.<domain>``; a context manager."""

    def __init__(self, host: str, lookup: Callable[[str, str], str | None], *, port: int = 53,
                 domain: str = "cluster.local", cache_seconds: float = 2.0) -> None:
        self.host, self.port, self.domain = host, port, domain
        self.lookup = lookup
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingUDPServer | None = None
        self._thread: threading.Thread | None = None

    def resolve(self, name: str) -> tuple[int, str | None]:
        """(rcode, address) for an A query of ``name``."""
        suffix = f".svc.{self.domain}"
        if not name.endswith(suffix):
            return NXDOMAIN, None
        parts = name[: -len(suffix)].split(".")
        if len(parts) != 2 or not all(parts):
            return NXDOMAIN, None
        key = (parts[0], parts[1])
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
        if cached is None or cached[0] < now:
            try:
                address = self.lookup(*key)
            except Exception as e:  # the apiserver is away: no answer rather than a wrong one
                log.debug("cluster DNS lookup %s failed: %s", name, e)
                address = None
            cached = (now + self.cache_seconds, address)
            with self._lock:
                self._cache[key] = cached
        return (NOERROR, cached[1]) if cached[1] else (NXDOMAIN, None)

    def answer(self, data: bytes) -> bytes | None:
        try:
            qid, flags, name, qtype, qclass, question = parse_query(data)
        except ValueError:
            return build_response(struct.unpack("!H", data[:2])[0], 0, b"", FORMERR, None) if len(data) >= 2 else None
        if qclass != CLASS_IN or flags & 0x7800:  # only standard queries
            return build_response(qid, flags, question, NOTIMP, None)
        rcode, address = self.resolve(name)
        # AAAA of an existing name: NOERROR with no answer (IPv4-only cluster), so A still counts
        return build_response(qid, flags, question, rcode, address if qtype == TYPE_A else None)

    def __enter__(self) -> ClusterDNS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        dns = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = dns.answer(data)
                if reply:
                    with contextlib.suppress(OSError):
                        sock.sendto(reply, self.client_address)

        self._server = socketserver.ThreadingUDPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="cluster-dns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
