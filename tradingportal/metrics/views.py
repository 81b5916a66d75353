"""``GET /metrics``: the Prometheus text format, for callers that may read it.

Who may: a caller with ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant
time), or one whose address is in ``METRICS_ALLOWED_NETWORKS`` (CIDRs). With neither set,
loopback callers only, and not a request that came through a proxy (it carries
``X-Forwarded-For``, ``X-Real-IP`` or ``Forwarded`` while ``TRUSTED_PROXY_COUNT`` is 0: every
caller of a proxy on this host would otherwise look like loopback). The address is the
socket's peer, or with ``TRUSTED_PROXY_COUNT`` the one the outermost trusted proxy saw
(``tradingportal.security.client_address``, as the login lockout and throttles use).
Others get 401 (no token sent, a token is configured) or 403, and no figures.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from tradingportal.metrics.collectors import Scrape
from tradingportal.security import client_address, secret_register

logger = logging.getLogger(__name__)
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")
secret_register(settings.METRICS_TOKEN)  # masked in every log line of this process


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return address


def metrics_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the caller may read the metrics, else the response that refuses it."""
    token = settings.METRICS_TOKEN
    networks = settings.METRICS_ALLOWED_NETWORKS
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        secret_register(token)
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return _refused(403, "wrong metrics token")
    address = _address(client_address(request))
    if networks:
        if address is not None and any(address in network for network in networks):
            return None
    elif not token:
        through_proxy = settings.TRUSTED_PROXY_COUNT <= 0 and any(request.META.get(h) for h in PROXY_HEADERS)
        if address is not None and address.is_loopback and not through_proxy:
            return None
        return _refused(
            403,
            "metrics are served to loopback callers only (set METRICS_TOKEN or "
            "METRICS_ALLOWED_NETWORKS to scrape from elsewhere)",
        )
    if token:
        response = _refused(401, "send Authorization: Bearer <METRICS_TOKEN>")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return _refused(403, "this address may not read the metrics (METRICS_ALLOWED_NETWORKS)")


def _refused(status: int, reason: str) -> HttpResponse:
    return HttpResponse(
        reason + "\n",
        status=status,
        content_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(Scrape())
    return HttpResponse(body, content_type=content_type, headers={"Cache-Control": "no-store"})
