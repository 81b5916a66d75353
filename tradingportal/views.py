import asyncio
import hmac

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from tradingportal.health import health_report, public_report
from tradingportal.security import secret_register


async def may_see_health_details(request: HttpRequest) -> bool:
    """A logged-in staff user, or a caller with ``Authorization: Bearer <HEALTHZ_TOKEN>``
    (compared in constant time)."""
    token = settings.HEALTHZ_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer":
        secret_register(token)
        return hmac.compare_digest(given.strip().encode(), token.encode())
    if not request.COOKIES.get(settings.SESSION_COOKIE_NAME):
        return False  # a load balancer: no session to look up
    try:
        user = await asyncio.wait_for(request.auser(), settings.HEALTH_CHECK_TIMEOUT)
    except Exception:  # noqa: BLE001 - sessions unreadable (database or cache down): no details
        return False
    return bool(user.is_active and user.is_staff)


async def healthz(request: HttpRequest) -> JsonResponse:
    """Database, cache and channel layer (HTTP 503 when one is down), plus the worker and
    the feed (reported; they do not change the code). Details only for staff or the token."""
    report, detailed = await asyncio.gather(health_report(), may_see_health_details(request))
    body = report if detailed else public_report(report)
    return JsonResponse(body, status=200 if report["ok"] else 503, headers={"Cache-Control": "no-store"})
