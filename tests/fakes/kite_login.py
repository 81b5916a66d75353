"""A fake of Kite's login page (``KITE_LOGIN_URL``): a real local HTTP server.

``GET /connect/login?v=3&api_key=...&redirect_params=...`` answers as Kite does once the
user has logged in: a redirect to the app's registered redirect URL (``redirect_url``, the
portal's ``/kite/callback/``) with ``action=login&type=login&status=success&request_token=...``
and the ``redirect_params`` given, decoded, appended. The request token comes from the
``FakeKite`` REST fake, which then exchanges it (``POST /session/token``) once.

``status`` other than "success" sends the user back without a request token, as Kite does
when the login is cancelled; an unknown ``api_key`` or a missing ``v=3`` gets a 400 page.

    with FakeKite() as kite, FakeKiteLogin(kite, redirect_url="http://testserver/kite/callback/") as login:
        settings.KITE_LOGIN_URL = login.url
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.fakes.kite_rest import FakeKite


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKiteLogin


@dataclass
class FakeKiteLogin:
    rest: FakeKite
    redirect_url: str
    status: str = "success"  # what Kite says in the redirect ("cancelled": the user gave up)
    requests: list[dict[str, str]] = field(default_factory=list)  # the query of every login page request

    def __post_init__(self) -> None:
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The login page (what ``KITE_LOGIN_URL`` is set to)."""
        assert self._server is not None, "start the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/connect/login"

    def start(self) -> FakeKiteLogin:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-kite-login", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeKiteLogin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.requests.append(query)
        if parts.path != "/connect/login":
            self._answer(handler, 404, "Not found")
            return
        if query.get("v") != "3" or query.get("api_key") != self.rest.api_key:
            self._answer(handler, 400, "Invalid `api_key` or missing `v=3`.")
            return
        back = {"action": "login", "type": "login", "status": self.status}
        if self.status == "success":
            back["request_token"] = self.rest.issue_request_token()
        back.update(parse_qsl(query.get("redirect_params", ""), keep_blank_values=True))
        handler.send_response(302)
        handler.send_header("Location", f"{self.redirect_url}?{urlencode(back)}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    @staticmethod
    def _answer(handler: _Handler, status: int, text: str) -> None:
        body = text.encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
