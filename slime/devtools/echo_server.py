"""The test app of the mesh test bed: an HTTP echo server, and a small client to call it from a Pod.

Runs inside the test-app image (Debian's python3, standard library only)::

    echo-server serve [--port 8080]          # answers every request with JSON:
                                             # {"pod", "method", "path", "headers", "peer"}
    echo-server get URL [URL ...] [--count N] [--parallel P] [--header K:V ...] [--timeout S]
                                             # prints, per URL, one line {"url", "codes": [...],
                                             # "bodies": [...first 3...], "headers": [...theirs...]}

The client makes one connection per request, so each request is a new stream through any sidecar
on the way. SIGTERM stops the server at once (Pods are deleted without waiting for a grace period).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "slime-echo"
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "pod": os.environ.get("POD_NAME", ""),
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "peer": self.client_address[0],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:  # one line per request on stdout
        print(f"{self.client_address[0]} {self.command} {self.path}", flush=True)


def serve(port: int) -> None:
    server = ThreadingHTTPServer(("0.0.0.0", port), EchoHandler)  # noqa: S104 - inside a Pod's netns
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"echo server on :{port}", flush=True)
    server.serve_forever()


def _one(url: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - test URLs
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e).encode(), {}


def get(url: str, count: int, headers: dict[str, str], timeout: float, parallel: int = 1) -> dict[str, Any]:
    """``count`` requests, ``parallel`` at a time (a burst: all at once when ``parallel`` >= ``count``)."""
    codes: list[int] = []
    bodies: list[str] = []
    answers: list[dict[str, str]] = []  # response headers (lower-case names) of the kept bodies
    with ThreadPoolExecutor(max(1, parallel)) as pool:
        results = list(pool.map(lambda _: _one(url, headers, timeout), range(count)))
    for code, body, got in results:
        codes.append(code)
        if len(bodies) < 3 or code != codes[0]:
            bodies.append(body.decode(errors="replace")[:2000])
            answers.append(got)
    return {"codes": codes, "bodies": bodies, "headers": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="echo-server")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    g = sub.add_parser("get")
    g.add_argument("url", nargs="+")
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--header", action="append", default=[], help="K:V")
    g.add_argument("--timeout", type=float, default=5.0)
    g.add_argument("--parallel", type=int, default=1, help="requests in flight at once")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.port)
        return 0
    headers = dict(h.split(":", 1) for h in args.header)
    for url in args.url:
        result = get(url, args.count, {k.strip(): v.strip() for k, v in headers.items()}, args.timeout, args.parallel)
        print(json.dumps({"url": url, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
