"""A fake of Telegram's Bot API: a real HTTP server on a free loopback port that answers
``POST /bot<token>/sendMessage`` as Telegram does and records every request."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    body: dict[str, Any]


@dataclass
class FakeTelegram:
    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    answer: dict[str, Any] | None = None  # None: Telegram's "ok" answer with the message
    hanging: bool = False  # hold every request unanswered until the server stops
    release: threading.Event = field(default_factory=threading.Event)

    def fail(self, status: int, description: str, **parameters: Any) -> None:
        self.status = status
        self.answer = {"ok": False, "error_code": status, "description": description}
        if parameters:
            self.answer["parameters"] = parameters

    @property
    def texts(self) -> list[str]:
        return [request.body.get("text", "") for request in self.received]


@contextlib.contextmanager
def fake_telegram() -> Iterator[FakeTelegram]:
    fake = FakeTelegram()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {"unparsed": raw.decode(errors="replace")}
            fake.received.append(Received(path=self.path, body=body))
            if fake.hanging:
                fake.release.wait(timeout=60)
                return
            if not self.path.endswith("/sendMessage"):
                status, answer = 404, {"ok": False, "error_code": 404, "description": "Not Found"}
            elif fake.answer is None:
                status = 200
                answer = {"ok": True, "result": {"message_id": len(fake.received), "text": body.get("text")}}
            else:
                status, answer = fake.status, fake.answer
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
