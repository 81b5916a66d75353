"""The trader's dashboard and the latest-tick API."""

from __future__ import annotations

import json
import logging
import math

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ingestion.latest import latest_ticks
from ingestion.status import feed_status
from instruments.selectors import active_instruments, feed_capacity
from markets.calendar import market_summary, markets_status
from tradingportal.logging import RepeatedFailure

logger = logging.getLogger(__name__)
MAX_LATEST_TOKENS = 1000
_store_failure = RepeatedFailure(logger, "reading the latest ticks for the API")
_market_failure = RepeatedFailure(logger, "reading the market calendar for the dashboard")


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    instruments = list(
        active_instruments().values("instrument_token", "tradingsymbol", "exchange", "segment", "name")[
            : feed_capacity()
        ]
    )
    try:
        market = {
            **market_summary(exchanges=[row["exchange"] for row in instruments]),
            "status": json.dumps(markets_status()),  # the page's own until the status frames come
        }
    except Exception as exc:  # noqa: BLE001 - the page works without it; the status frames bring it
        _market_failure.failed(exc)
        market = None
    else:
        _market_failure.succeeded()
    return render(
        request,
        "ingestion/dashboard.html",
        {"instruments": instruments, "capacity": feed_capacity(), "status": feed_status(), "market": market},
    )


class LatestTicksView(APIView):
    """The latest tick of each requested instrument, as the ingestion last stored it.

    Each tick carries ``received_at`` (when the ingestion received it, ISO 8601 in IST);
    with ``max_age`` only ticks received at most that many seconds ago are given, older
    ones are ``null`` like instruments without a tick. 503 when the store is unreachable.
    """

    @extend_schema(
        parameters=[
            OpenApiParameter("tokens", str, description="Comma-separated instrument tokens (at most 1000)."),
            OpenApiParameter("max_age", float, required=False,
                             description="Only ticks received at most this many seconds ago (older: null)."),
        ],
        responses={200: inline_serializer("LatestTicks", {
            "ticks": serializers.DictField(child=serializers.DictField(allow_null=True)),
            "feed": serializers.DictField(allow_null=True),
        })},
    )  # fmt: skip
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("tokens", "")
        try:
            tokens = [int(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            return Response({"detail": "tokens must be comma-separated integers"}, status=400)
        if not tokens:
            return Response({"detail": "give ?tokens=256265,738561"}, status=400)
        if len(tokens) > MAX_LATEST_TOKENS:
            return Response({"detail": f"at most {MAX_LATEST_TOKENS} tokens per request"}, status=400)
        max_age: float | None = None
        if "max_age" in request.query_params:
            try:
                max_age = float(request.query_params["max_age"])
            except ValueError:
                max_age = -1.0
            if not math.isfinite(max_age) or max_age < 0:
                return Response({"detail": "max_age must be a number of seconds, 0 or more"}, status=400)
        try:
            found = latest_ticks(tokens, max_age=max_age)
        except Exception as exc:  # noqa: BLE001 - the store (Redis) is down: say so, do not 500
            _store_failure.failed(exc)
            return Response(
                {"detail": "the latest-tick store is unreachable; try again shortly", "feed": feed_status()},
                status=503,
            )
        _store_failure.succeeded()
        ticks = {str(t): found.get(t) for t in tokens}
        return Response({"ticks": ticks, "feed": feed_status()})
