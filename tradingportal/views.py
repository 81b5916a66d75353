from django.http import HttpRequest, JsonResponse

from tradingportal.health import health_report


async def healthz(request: HttpRequest) -> JsonResponse:
    """Database, cache and channel layer reachability; HTTP 503 when any is down."""
    report = await health_report()
    return JsonResponse(report, status=200 if report["ok"] else 503)
