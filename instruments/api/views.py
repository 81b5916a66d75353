"""Instrument API: thin views over selectors (reads) and services (writes)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_q.tasks import async_task
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from instruments.api.filters import InstrumentFilter
from instruments.api.serializers import (
    ActivationResultSerializer,
    InstrumentSerializer,
    SyncRequestSerializer,
    TokensSerializer,
    instrument_rows,
)
from instruments.models import Instrument, Source
from instruments.selectors import instrument_stats
from instruments.services import instruments_activate, instruments_deactivate
from instruments.sync.errors import ActivationLimitExceeded


class CanChangeInstruments(permissions.BasePermission):
    """Staff, or a user holding ``instruments.change_instrument``."""

    message = "Switching streaming needs staff status or the 'change instrument' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user
            and user.is_authenticated
            and (user.is_staff or user.has_perm("instruments.change_instrument"))
        )


class CanRunSync(permissions.BasePermission):
    message = "Starting a sync needs staff status or the 'start an instrument sync' permission."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and (user.is_staff or user.has_perm("instruments.run_sync"))
        )


def queue_sync(*, source: str, url: str = "", filter: str = "", dry_run: bool = False, force: bool = False,
               by: str) -> str:  # fmt: skip
    """Queue a sync on the worker; its result lands in SyncRun."""
    return async_task(
        "instruments.tasks.sync_instruments_task",
        source=source, url=url or None, preset=filter or None, force=force, dry_run=dry_run,
        triggered_by=f"user:{by}", task_name=f"sync {source} by {by}", group="instrument-sync",
    )  # fmt: skip


class InstrumentViewSet(viewsets.ReadOnlyModelViewSet):
    """Instruments of the master. Lists listed instruments unless ``listed=false``."""

    serializer_class = InstrumentSerializer
    filterset_class = InstrumentFilter
    lookup_field = "instrument_token"
    lookup_url_kwarg = "token"
    lookup_value_regex = r"\d+"

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

    @extend_schema(request=SyncRequestSerializer, responses={202: inline_serializer(
        "SyncQueued", {"task_id": serializers.CharField(), "status_url": serializers.CharField()})})  # fmt: skip
    @action(detail=False, methods=["post"], permission_classes=[CanRunSync], filterset_class=None)
    def sync(self, request: Request) -> Response:
        """Queue a sync on the worker (staff). Its outcome is recorded as a sync run."""
        payload = SyncRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        task_id = queue_sync(**payload.validated_data, by=request.user.get_username())
        return Response(
            {"task_id": task_id, "status_url": "/admin/instruments/syncrun/"}, status=status.HTTP_202_ACCEPTED
        )
