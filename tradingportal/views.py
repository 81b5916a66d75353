from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse

from ingestion.status import feed_status
from tradingportal.health import health_report


async def healthz(request: HttpRequest) -> JsonResponse:
    """Database, cache and channel layer reachability; HTTP 503 when any is down."""
    report = await health_report()
    # The feed's heartbeat, for whoever is on call; it does not decide the status code
    # (the web stays healthy while an operator fixes the feed).
    report["ingestion"] = await sync_to_async(feed_status)() or {"running": False}
    return JsonResponse(report, status=200 if report["ok"] else 503)
