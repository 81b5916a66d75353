"""A real local HTTP server standing in for a dump host: routes, redirects, slow
downloads, and a record of every request (path and headers) it received."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # A slow download: send ``body``, then wait for ``hold`` before sending ``rest``.
    hold: threading.Event | None = None
    rest: bytes = b""


@dataclass
class Seen:
    path: str
    headers: dict[str, str]


class FakeServer:
    def __init__(self, routes: dict[str, Route | bytes], host: str = "127.0.0.1") -> None:
        self.routes = {path: r if isinstance(r, Route) else Route(body=r) for path, r in routes.items()}
        self.seen: list[Seen] = []
        self.started = threading.Event()  # set when a held download has sent its first part
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                server.seen.append(Seen(self.path, dict(self.headers)))
                route = server.routes.get(path, Route(body=b"not found", status=404))
                self.send_response(route.status)
                for key, value in route.headers.items():
                    self.send_header(key, value)
                if route.hold is None:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)
                self.wfile.flush()
                if route.hold is not None:
                    server.started.set()
                    route.hold.wait(120)
                    with contextlib.suppress(OSError):
                        self.wfile.write(route.rest)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.port: int = self._httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def start(self) -> FakeServer:
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        for route in self.routes.values():
            if route.hold is not None:
                route.hold.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@contextlib.contextmanager
def fake_server(routes: dict[str, Route | bytes], host: str = "127.0.0.1") -> Iterator[FakeServer]:
    server = FakeServer(routes, host=host).start()
    try:
        yield server
    finally:
        server.stop()
