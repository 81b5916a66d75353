"""Instrument API: thin views over selectors (reads) and services (writes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import APIRootView

from instruments.api.filters import InstrumentFilter
from instruments.api.serializers import (
    ActivationResultSerializer,
    InstrumentSerializer,
    SyncRequestSerializer,
    TokensSerializer,
    instrument_rows,
)
from instruments.models import Instrument, Source
from instruments.selectors import MAX_TOKEN, instrument_stats
from instruments.services import instrument_sync_enqueue, instruments_activate, instruments_deactivate
from instruments.sync.errors import ActivationLimitExceeded, QueueUnavailable, SyncError
from tradingportal.pagination import StrictPagination


class PortalAPIRoot(APIRootView):
    """The Kite Trading Desk API: the instrument master and live prices, for strategies and tools.

    **Authentication.** Send `Authorization: Token <key>` (an operator creates keys in
    admin → Auth Token → Tokens), or use a logged-in browser session. Anonymous calls get
    401 with `WWW-Authenticate: Token`.

    **Endpoints.**

    - `GET /api/instruments/`: listed instruments, 50 a page (`page`, `page_size` up to 1000).
      Filters: `exchange`, `segment`, `instrument_type` (comma-separated), `name`,
      `expiry_from`, `expiry_to`, `is_active`, `listed`, `source`, and `search` (symbol
      prefix, name fragment or exact token; exact matches first).
    - `GET /api/instruments/{token}/`: one instrument by its Kite token.
    - `GET /api/instruments/stats/`: counts by exchange, segment and asset class; the last sync.
    - `POST /api/instruments/activate/`, `/deactivate/` `{"tokens": [...]}`: stream or stop
      streaming (needs the *change instrument* permission).
    - `POST /api/instruments/sync/`: queue a sync of the master on the worker (needs *Can
      start an instrument sync*); only the configured dump hosts are fetched.
    - `GET /api/ticks/latest/?tokens=256265,738561&max_age=5`: the latest tick per
      instrument (each with `received_at`) and the feed's status.
    - `GET /api/schema/` (OpenAPI) and `/api/docs/` (browsable docs) describe every field.

    Prices, strikes and tick sizes are decimal strings, never floats.
    """

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        for name, url_name in (
            ("ticks_latest", "ticks-latest"),
            ("schema", "api-schema"),
            ("docs", "api-docs"),
        ):
            response.data[name] = reverse(url_name, request=request, format=kwargs.get("format"))
        response.data["authentication"] = (
            "Authorization: Token <key> (admin > Auth Token > Tokens), or a session"
        )
        return response


class CanChangeInstruments(permissions.BasePermission):
    """Holders of ``instruments.change_instrument`` (the admin's rule; superusers have it)."""

    message = "Switching streaming needs the 'Can change instrument' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("instruments.change_instrument"))


class CanRunSync(permissions.BasePermission):
    """Holders of ``instruments.run_sync`` (the admin's rule; superusers have it)."""

    message = "Starting a sync needs the 'Can start an instrument sync' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("instruments.run_sync"))


class InstrumentPagination(StrictPagination):
    """``page`` and ``page_size`` (up to 1000); a page that does not exist is a 400 that says why."""

    max_page_size = 1000


class InstrumentViewSet(viewsets.ReadOnlyModelViewSet):
    """Instruments of the master. Lists listed instruments unless ``listed=false``."""

    serializer_class = InstrumentSerializer
    filterset_class = InstrumentFilter
    pagination_class = InstrumentPagination
    lookup_field = "instrument_token"
    lookup_url_kwarg = "token"
    lookup_value_regex = r"\d{1,19}"  # a bigint; longer is a 404 from the URL resolver

    def get_queryset(self) -> QuerySet[Instrument]:
        queryset = Instrument.objects.all().order_by("exchange", "tradingsymbol", "id")
        if "listed" not in self.request.query_params:
            queryset = queryset.filter(is_listed=True)
        return queryset

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset()).values(*InstrumentSerializer.Meta.fields)
        page = self.paginate_queryset(queryset)
        assert page is not None
        return self.get_paginated_response(instrument_rows(page))

    def get_object(self) -> Instrument:
        token = int(self.kwargs["token"])
        if token > MAX_TOKEN:
            raise NotFound("No instrument has that token.")
        # A token names one listed instrument; if none is listed, the latest that held it.
        listed = Instrument.objects.filter(
            source=Source.KITE, instrument_token=token, is_listed=True
        ).order_by()
        for instrument in listed[:1]:
            return instrument
        return get_object_or_404(
            Instrument.objects.filter(instrument_token=token).order_by("-delisted_at", "-id")[:1]
        )

    def _switch(self, request: Request, *, activate: bool) -> Response:
        payload = TokensSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        tokens = payload.validated_data["tokens"]
        by = request.user.get_username()
        try:
            result = (instruments_activate if activate else instruments_deactivate)(tokens=tokens, by=by)
        except ActivationLimitExceeded as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(ActivationResultSerializer(asdict(result)).data)

    @extend_schema(request=TokensSerializer, responses={200: ActivationResultSerializer, 409: OpenApiResponse(
        description="Refused: the feed's instrument limit would be exceeded.")})  # fmt: skip
    @action(detail=False, methods=["post"], permission_classes=[CanChangeInstruments])
    def activate(self, request: Request) -> Response:
        """Stream these instruments (listed Kite tokens). All or nothing against the feed's limit."""
        return self._switch(request, activate=True)

    @extend_schema(request=TokensSerializer, responses={200: ActivationResultSerializer})
    @action(detail=False, methods=["post"], permission_classes=[CanChangeInstruments])
    def deactivate(self, request: Request) -> Response:
        """Stop streaming these instruments."""
        return self._switch(request, activate=False)

    @extend_schema(
        responses={200: inline_serializer("InstrumentStats", {"listed": serializers.IntegerField()})}
    )
    @action(detail=False, methods=["get"], filterset_class=None, pagination_class=None)
    def stats(self, request: Request) -> Response:
        """Counts by exchange, segment and asset class; active counts; the last sync."""
        return Response(instrument_stats())

    @extend_schema(request=SyncRequestSerializer, responses={
        202: inline_serializer("SyncQueued", {"task_id": serializers.CharField(), "task_name": serializers.CharField(),
                                              "status_url": serializers.CharField()}),
        400: OpenApiResponse(description="Bad input, or a URL a sync started from the web may not fetch."),
        503: OpenApiResponse(description="The task queue is unreachable; nothing was queued."),
    })  # fmt: skip
    @action(detail=False, methods=["post"], permission_classes=[CanRunSync], filterset_class=None)
    def sync(self, request: Request) -> Response:
        """Queue a sync on the worker. Its outcome is recorded as a sync run. A URL must be on
        one of the configured dump hosts and carry no credentials."""
        payload = SyncRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            queued = instrument_sync_enqueue(**payload.validated_data, by=request.user.get_username())
        except QueueUnavailable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        except SyncError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        body = {
            "task_id": queued.task_id,
            "task_name": queued.task_name,
            "status_url": "/admin/instruments/syncrun/",
        }
        return Response(body, status=status.HTTP_202_ACCEPTED)
