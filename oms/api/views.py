"""The OMS API: thin views over ``oms.services`` (writes) and ``oms.selectors`` (reads)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from datetime import date
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from oms.api.parsers import DecimalJSONParser
from oms.api.serializers import (
    KillSwitchEventSerializer,
    KillSwitchRequestSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderModifySerializer,
    OrderSerializer,
    TradeSerializer,
)
from oms.killswitch import kill_switch_set, kill_switch_status
from oms.models import Order, Strategy, Trade
from oms.selectors import orders_visible_to, pnl_today, positions_kite_shape, trades_visible_to
from oms.services import OrderError, order_cancel, order_modify, order_place, order_update_from_postback

logger = logging.getLogger(__name__)
MAX_KEY_LENGTH = 128


class CanPlaceOrders(permissions.BasePermission):
    message = (
        "Placing, modifying and cancelling orders needs the 'Can place, modify and cancel orders' permission."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.has_perm("oms.place_order"))


class CanOperateKillSwitch(permissions.BasePermission):
    message = (
        "Engaging or releasing the kill switch needs the 'Can engage and release the kill switch' permission."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return bool(request.user and request.user.has_perm("oms.operate_kill_switch"))


def _day(request: Request) -> date | None:
    raw = request.query_params.get("day", "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({"day": f"{raw[:20]!r} is not a date; use YYYY-MM-DD (IST)"}) from None


def _filter_strategy(rows: QuerySet[Any], request: Request) -> QuerySet[Any]:
    name = request.query_params.get("strategy", "").strip()
    return rows.filter(strategy__name=name) if name else rows


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return f"auto-{uuid.uuid4().hex}"
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise ValidationError({"Idempotency-Key": f"at most {MAX_KEY_LENGTH} printable ASCII characters"})
    return key


def _refusal_response(result: Any) -> Response:
    body = {
        "rule": result.refusal.rule,
        "detail": result.refusal.detail,
        "order": OrderSerializer(result.order).data,
    }
    code = (
        status.HTTP_429_TOO_MANY_REQUESTS if result.refusal.rule == "rate_limit" else status.HTTP_409_CONFLICT
    )
    return Response(body, status=code)


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Orders: place (POST, with an ``Idempotency-Key`` header), list, read with its
    audit trail, modify (PATCH) and cancel (DELETE)."""

    serializer_class = OrderSerializer
    permission_classes = [permissions.IsAuthenticated, CanPlaceOrders]
    parser_classes = [DecimalJSONParser, FormParser]
    filterset_class = None

    def get_queryset(self) -> QuerySet[Order]:
        orders = orders_visible_to(user=self.request.user).select_related("placed_by")
        orders = _filter_strategy(orders, self.request)
        statuses = [
            s.strip().upper() for s in self.request.query_params.get("status", "").split(",") if s.strip()
        ]
        if statuses:
            orders = orders.filter(status__in=statuses)
        day = _day(self.request)
        if day is not None:
            orders = orders.filter(placed_at__date=day)
        if self.action == "retrieve":
            orders = orders.prefetch_related("events")
        return orders

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return OrderDetailSerializer if self.action == "retrieve" else OrderSerializer

    @extend_schema(
        request=OrderCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description=(
            "The same key from the same user is the same order (a replay answers 200 with it; a different "
            "body answers 422). Without it, the order gets a fresh key."))],  # fmt: skip
        responses={201: OrderSerializer, 200: OrderSerializer, 409: OpenApiResponse(description=(
            'Refused by a risk rule: {"rule": "price_band", "detail": "...", "order": {...}}')),
            422: OpenApiResponse(description="Idempotency-Key reused with a different body."),
            429: OpenApiResponse(description="Refused by the order rate limit (rule rate_limit).")},
    )  # fmt: skip
    def create(self, request: Request) -> Response:
        payload = OrderCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        try:
            result = order_place(
                request=payload.order_request(), user=request.user, idempotency_key=_idempotency_key(request),
                strategy_name=data["strategy"] or None, instrument_token=data["instrument_token"],
                exchange=data["exchange"], tradingsymbol=data["tradingsymbol"],
            )  # fmt: skip
        except OrderError as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        if result.refusal is not None:
            return _refusal_response(result)
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(OrderSerializer(result.order).data, status=code)

    @extend_schema(request=OrderModifySerializer, responses={200: OrderSerializer})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        payload = OrderModifySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            order = order_modify(order_id=_pk(pk), user=request.user, **payload.validated_data)
        except OrderError as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        return Response(OrderSerializer(order).data)

    @extend_schema(request=None, responses={200: OrderSerializer})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        try:
            order = order_cancel(order_id=_pk(pk), user=request.user)
        except OrderError as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        return Response(OrderSerializer(order).data)


def _pk(raw: str | None) -> int:
    try:
        return int(raw or "")
    except ValueError:
        raise ValidationError({"id": "order ids are integers"}) from None


class TradeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Fills, newest first; filter by ``strategy`` and ``day``."""

    serializer_class = TradeSerializer
    filterset_class = None

    def get_queryset(self) -> QuerySet[Trade]:
        trades = _filter_strategy(trades_visible_to(user=self.request.user), self.request)
        day = _day(self.request)
        return trades.filter(filled_at__date=day) if day is not None else trades


class PositionsView(APIView):
    """Positions in Kite's shape: open ones, and flat ones traded today with their P&L."""

    @extend_schema(parameters=[OpenApiParameter("strategy", str)],
                   responses={200: inline_serializer("Positions", {"quantity": serializers.IntegerField()},
                                                     many=True)})  # fmt: skip
    def get(self, request: Request) -> Response:
        rows = positions_kite_shape(user=request.user)
        name = request.query_params.get("strategy", "").strip()
        if name:
            rows = [row for row in rows if row["strategy"] == name]
        return Response(_decimals(rows))


def _decimals(value: Any) -> Any:
    """Decimals as strings (as every other API answer), never floats."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decimals(v) for v in value]
    return value


class PnlView(APIView):
    """Today's realised and unrealised P&L, in total and per strategy."""

    @extend_schema(responses={200: inline_serializer("Pnl", {"pnl": serializers.DecimalField(22, 4)})})
    def get(self, request: Request) -> Response:
        return Response(_decimals(pnl_today(user=request.user)))


class KillSwitchView(APIView):
    """The kill switch: GET its state; POST ``{"engaged": true|false, "reason": "...",
    "mode": "halted"|"reducing", "cancel_open": bool, "square_off": bool, "strategy": name}``."""

    permission_classes = [permissions.IsAuthenticated, CanOperateKillSwitch]
    parser_classes = [DecimalJSONParser, FormParser]

    @extend_schema(responses={200: inline_serializer("KillSwitch", {"state": serializers.CharField()})})
    def get(self, request: Request) -> Response:
        return Response(kill_switch_status())

    @extend_schema(request=KillSwitchRequestSerializer,
                   responses={200: inline_serializer("KillSwitchSet", {"state": serializers.CharField()})})  # fmt: skip
    def post(self, request: Request) -> Response:
        payload = KillSwitchRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        strategy = None
        if data["strategy"]:
            strategy = Strategy.objects.filter(name=data["strategy"]).first()
            if strategy is None:
                return Response({"detail": f"unknown strategy {data['strategy']!r}"}, status=400)
        event = kill_switch_set(state=payload.state, by=request.user, reason=data["reason"], strategy=strategy,
                                cancel_open=data["cancel_open"], square_off=data["square_off"])  # fmt: skip
        return Response({**kill_switch_status(), "event": KillSwitchEventSerializer(event).data})


class PostbackView(APIView):
    """Kite's order postback. Verified by its checksum
    (``sha256(order_id + order_timestamp + KITE_API_SECRET)``); unsigned or wrongly signed
    ones are refused (403) and change nothing."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [DecimalJSONParser]
    throttle_classes: list[Any] = []

    @extend_schema(request=inline_serializer("Postback", {"order_id": serializers.CharField()}),
                   responses={200: OpenApiResponse(description="Taken (also for an order we do not know)."),
                              403: OpenApiResponse(description="Missing or bad checksum.")})  # fmt: skip
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        secret = settings.KITE_API_SECRET
        if not secret:
            logger.error("a Kite postback arrived but KITE_API_SECRET is not set: refused")
            return Response(
                {"detail": "postbacks are not accepted: KITE_API_SECRET is not configured"}, status=403
            )
        checksum = str(data.get("checksum") or "")
        expected = hashlib.sha256(
            f"{data.get('order_id', '')}{data.get('order_timestamp', '')}{secret}".encode()
        ).hexdigest()
        if not checksum or not hmac.compare_digest(checksum, expected):
            logger.warning("refused a Kite postback with a missing or bad checksum (order_id %s)",
                           str(data.get("order_id", ""))[:32])  # fmt: skip
            return Response({"detail": "missing or bad checksum"}, status=403)
        applied = order_update_from_postback(data=data)
        return Response({"status": "ok", "known": applied.order is not None})
