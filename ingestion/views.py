"""The trader's dashboard and the latest-tick API."""

from __future__ import annotations

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

MAX_LATEST_TOKENS = 1000


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    instruments = list(
        active_instruments().values("instrument_token", "tradingsymbol", "exchange", "segment", "name")[
            : feed_capacity()
        ]
    )
    return render(
        request,
        "ingestion/dashboard.html",
        {"instruments": instruments, "capacity": feed_capacity(), "status": feed_status()},
    )


class LatestTicksView(APIView):
    """The latest tick of each requested instrument, as the ingestion last stored it."""

    @extend_schema(
        parameters=[OpenApiParameter("tokens", str, description="Comma-separated instrument tokens (at most 1000).")],
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
        found = latest_ticks(tokens)
        ticks = {str(t): found.get(t) for t in tokens}
        return Response({"ticks": ticks, "feed": feed_status()})
