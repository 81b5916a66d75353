"""The websocket origin check, as Django's CSRF check does it for forms.

A browser sends ``Origin`` with every websocket handshake, and sends the session cookie
whatever page opened the socket: without this check any site a logged-in user visits
could read the live data. A handshake is accepted when its ``Origin`` is exactly the
portal's own origin (scheme, host and port: ``https`` behind ``wss`` or a trusted
``X-Forwarded-Proto``, and a ``Host`` in ``ALLOWED_HOSTS``), or one of
``CSRF_TRUSTED_ORIGINS`` (``https://*.example.com`` allows its subdomains). A handshake
without ``Origin`` (not a browser) is refused too; other clients send the portal's
origin. Refused handshakes get HTTP 403.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _scheme(scope: dict[str, Any]) -> str:
    if scope.get("scheme") in ("wss", "https"):
        return "https"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        value = _header(scope, header)
        if value is not None and value.split(",")[0].strip() == secure_value:
            return "https"
    return "http"


def origin_allowed(scope: dict[str, Any]) -> bool:
    origin = _header(scope, b"origin")
    if not origin:
        return False
    host = _header(scope, b"host") or ""
    domain, _ = split_domain_port(host)
    if domain and validate_host(domain, settings.ALLOWED_HOSTS) and origin == f"{_scheme(scope)}://{host}":
        return True
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parts.netloc, urlsplit(pattern).netloc.lstrip("*"))
        for pattern in trusted
        if "*" in pattern and urlsplit(pattern).scheme == parts.scheme
    )


class OriginValidator:
    """ASGI middleware: websocket handshakes from another origin get HTTP 403."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.application(scope, receive, send)
