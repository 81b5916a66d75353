"""The OMS API: thin views over ``oms.services`` (writes) and ``oms.selectors`` (reads)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from datetime import date
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.exceptions import APIException, ParseError, Throttled, ValidationError
from rest_framework.parsers import FormParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from oms import state as order_state
from oms.api.parsers import DecimalJSONParser
from oms.api.serializers import (
    DetailSerializer,
    KillSwitchRequestSerializer,
    KillSwitchSetSerializer,
    KillSwitchStatusSerializer,
    OrderCreateSerializer,
    OrderDetailSerializer,
    OrderModifySerializer,
    OrderSerializer,
    PnlSerializer,
    PositionSerializer,
    PostbackSerializer,
    PostbackTakenSerializer,
    RefusalSerializer,
    TradeSerializer,
)
from oms.killswitch import kill_switch_set, kill_switch_status
from oms.models import Order, Strategy, StrategyAccess, Trade
from oms.selectors import orders_visible_to, pnl_today, positions_kite_shape, trades_visible_to
from oms.services import OrderError, order_cancel, order_modify, order_place, order_update_from_postback
from tradingportal.pagination import StrictPagination
from tradingportal.security import AnonymousThrottle

logger = logging.getLogger(__name__)
MAX_KEY_LENGTH = 128
# A strategy's name is a slug (``Strategy.name``); anything else cannot name one.
_STRATEGY_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
STATUS_NAMES = ", ".join(sorted(order_state.ALL))


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


# --- what a caller may type: every query parameter is checked here (400 with the reason) ---


def _day(request: Request) -> date | None:
    raw = request.query_params.get("day", "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({"day": f"{raw[:20]!r} is not a date; use YYYY-MM-DD (IST)"}) from None


def _strategy_name(request: Request) -> str | None:
    raw = request.query_params.get("strategy", "").strip()
    if not raw:
        return None
    if not _STRATEGY_NAME.fullmatch(raw):
        raise ValidationError({"strategy": "a strategy's name: letters, digits, - and _ (at most 64)"})
    return raw


def _filter_strategy(rows: QuerySet[Any], request: Request) -> QuerySet[Any]:
    name = _strategy_name(request)
    return rows.filter(strategy__name=name) if name else rows


def _statuses(request: Request) -> list[str]:
    """``status=OPEN,TRIGGER PENDING`` (or the parameter repeated); unknown names are a 400."""
    raw = ",".join(request.query_params.getlist("status"))
    wanted = {part.strip().upper() for part in raw.split(",") if part.strip()}
    unknown = sorted(wanted - order_state.ALL)
    if unknown:
        raise ValidationError({"status": f"unknown status {unknown[0][:40]!r}; one of: {STATUS_NAMES}"})
    return sorted(wanted)


STRATEGY_PARAMETER = OpenApiParameter("strategy", str, description="Only this strategy's rows (its name).")
DAY_PARAMETER = OpenApiParameter(
    "day", OpenApiTypes.DATE, description="Only this trading day (YYYY-MM-DD, IST)."
)
STATUS_PARAMETER = OpenApiParameter(
    "status", str, description=f"Comma-separated order statuses (Kite's): {STATUS_NAMES}."
)


class OmsPagination(StrictPagination):
    """``page`` and ``page_size`` (up to 500); a page that does not exist is a 400 that says why."""

    max_page_size = 500


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class BoundedBodyMixin:
    """A body past Django's limits is a JSON answer (413, or 400 for too many form
    fields), not Django's HTML error page."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, RequestDataTooBig):
            exc = PayloadTooLarge(
                f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
            )
        elif isinstance(exc, TooManyFieldsSent):
            exc = ParseError("The request has too many form fields.")
        return super().handle_exception(exc)  # type: ignore[misc]


def _tied_strategy(user: Any) -> Strategy | None:
    """The strategy an API user is tied to (``StrategyAccess``), or None."""
    access = StrategyAccess.objects.filter(user=user).select_related("strategy").first()
    return access.strategy if access is not None else None


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


ORDER_ERRORS = {
    400: OpenApiResponse(DetailSerializer, description="Bad input: the field and the reason."),
    404: OpenApiResponse(DetailSerializer, description="No such order (or not one this user may see)."),
}


@extend_schema_view(list=extend_schema(parameters=[STRATEGY_PARAMETER, STATUS_PARAMETER, DAY_PARAMETER]))
class OrderViewSet(
    BoundedBodyMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Orders: place (POST, with an ``Idempotency-Key`` header), list, read with its
    audit trail, modify (PATCH) and cancel (DELETE). A user tied to a strategy sees and
    changes only that strategy's orders: another's answer 404, as if they did not exist."""

    serializer_class = OrderSerializer
    permission_classes = [permissions.IsAuthenticated, CanPlaceOrders]
    parser_classes = [DecimalJSONParser, FormParser]
    pagination_class = OmsPagination
    filterset_class = None
    lookup_value_regex = r"[0-9]{1,18}"  # ASCII digits only; anything else is a 404 from the resolver

    def get_queryset(self) -> QuerySet[Order]:
        orders = orders_visible_to(user=self.request.user).select_related("placed_by")
        if self.action != "list":
            return orders.prefetch_related("events") if self.action == "retrieve" else orders
        orders = _filter_strategy(orders, self.request)
        statuses = _statuses(self.request)
        if statuses:
            orders = orders.filter(status__in=statuses)
        day = _day(self.request)
        if day is not None:
            orders = orders.filter(placed_at__date=day)
        return orders

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return OrderDetailSerializer if self.action == "retrieve" else OrderSerializer

    @extend_schema(
        request=OrderCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, description=(
            "The same key from the same user is the same order (a replay answers 200 with it; a different "
            "body answers 422). Without it, the order gets a fresh key."))],  # fmt: skip
        responses={201: OrderSerializer, 200: OrderSerializer, 400: ORDER_ERRORS[400],
            403: OpenApiResponse(DetailSerializer, description="No permission to place orders, or a strategy this "
                                 "user is not tied to."),
            409: OpenApiResponse(RefusalSerializer, description="Refused by a risk rule (the order is stored as "
                                 "RISK REJECTED)."),
            413: OpenApiResponse(DetailSerializer, description="The body is too large."),
            422: OpenApiResponse(DetailSerializer, description="Idempotency-Key reused with a different body."),
            429: OpenApiResponse(RefusalSerializer, description="Refused by the order rate limit (rule "
                                 "rate_limit), or the API throttle (then only detail).")},
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

    @extend_schema(request=OrderModifySerializer, responses={200: OrderSerializer, **ORDER_ERRORS})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        payload = OrderModifySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            order = order_modify(order_id=_pk(pk), user=request.user, **payload.validated_data)
        except OrderError as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        return Response(OrderSerializer(order).data)

    @extend_schema(request=None, responses={200: OrderSerializer, **ORDER_ERRORS})
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


@extend_schema_view(list=extend_schema(parameters=[STRATEGY_PARAMETER, DAY_PARAMETER]))
class TradeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Fills, newest first; filter by ``strategy`` and ``day``."""

    serializer_class = TradeSerializer
    pagination_class = OmsPagination
    filterset_class = None

    def get_queryset(self) -> QuerySet[Trade]:
        trades = _filter_strategy(trades_visible_to(user=self.request.user), self.request)
        day = _day(self.request)
        return trades.filter(filled_at__date=day) if day is not None else trades


class PositionsView(APIView):
    """Positions in Kite's shape: open ones, and flat ones traded today with their P&L."""

    @extend_schema(parameters=[STRATEGY_PARAMETER], responses={200: PositionSerializer(many=True)})
    def get(self, request: Request) -> Response:
        rows = positions_kite_shape(user=request.user)
        name = _strategy_name(request)
        if name:
            rows = [row for row in rows if row["strategy"] == name]
        return Response(PositionSerializer(rows, many=True).data)


class PnlView(APIView):
    """Today's realised and unrealised P&L, in total and per strategy."""

    @extend_schema(responses={200: PnlSerializer})
    def get(self, request: Request) -> Response:
        return Response(PnlSerializer(pnl_today(user=request.user)).data)


class KillSwitchView(BoundedBodyMixin, APIView):
    """The kill switch: GET its state; POST ``{"engaged": true|false, "reason": "...",
    "mode": "halted"|"reducing", "cancel_open": bool, "square_off": bool, "strategy": name}``.

    A user tied to a strategy sees and operates only that strategy's own switch (not the
    desk's, not another strategy's)."""

    permission_classes = [permissions.IsAuthenticated, CanOperateKillSwitch]
    parser_classes = [DecimalJSONParser, FormParser]

    def _status(self, tied: Strategy | None) -> dict[str, Any]:
        status_now = kill_switch_status()
        if tied is not None:
            status_now["strategies"] = [s for s in status_now["strategies"] if s["strategy"] == tied.name]
        return status_now

    @extend_schema(responses={200: KillSwitchStatusSerializer})
    def get(self, request: Request) -> Response:
        return Response(KillSwitchStatusSerializer(self._status(_tied_strategy(request.user))).data)

    @extend_schema(request=KillSwitchRequestSerializer, responses={
        200: KillSwitchSetSerializer,
        400: OpenApiResponse(DetailSerializer, description="Bad input (e.g. no reason, an unknown strategy)."),
        403: OpenApiResponse(DetailSerializer, description="No permission, or a tied user asking for the desk's "
                             "or another strategy's switch."),
    })  # fmt: skip
    def post(self, request: Request) -> Response:
        payload = KillSwitchRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        tied = _tied_strategy(request.user)
        if tied is not None and data["strategy"] != tied.name:
            return Response(
                {"detail": f"this API user may only operate strategy {tied.name!r}'s own kill switch: "
                           f"send \"strategy\": \"{tied.name}\""},
                status=403,
            )  # fmt: skip
        strategy = None
        if data["strategy"]:
            strategy = Strategy.objects.filter(name=data["strategy"]).first()
            if strategy is None:
                return Response({"detail": f"unknown strategy {data['strategy']!r}"}, status=400)
        event = kill_switch_set(state=payload.state, by=request.user, reason=data["reason"], strategy=strategy,
                                cancel_open=data["cancel_open"], square_off=data["square_off"])  # fmt: skip
        answer = {**self._status(tied), "event": event}
        return Response(KillSwitchSetSerializer(answer).data)


def postback_checksum_valid(data: dict[str, Any], *, secret: str) -> bool:
    """Kite's postback checksum, ``sha256(order_id + order_timestamp + api_secret)`` in hex,
    compared in constant time (as bytes: any text the caller sends is compared, never
    raised on)."""
    checksum = data.get("checksum")
    if not isinstance(checksum, str) or not checksum:
        return False
    expected = hashlib.sha256(f"{data.get('order_id', '')}{data.get('order_timestamp', '')}{secret}".encode())
    return hmac.compare_digest(checksum.encode("utf-8", "surrogatepass"), expected.hexdigest().encode())


class PostbackView(BoundedBodyMixin, APIView):
    """Kite's order postback. Verified by its checksum
    (``sha256(order_id + order_timestamp + KITE_API_SECRET)``); unsigned or wrongly signed
    ones are refused (403) and change nothing. No session, no CSRF token; bodies are JSON
    objects of at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes. Correctly signed postbacks
    are never throttled (Kite sends one per order update); refused ones count against the
    anonymous throttle of their address (``API_THROTTLE_ANON``), past which they get 429
    and are no longer logged one by one."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [DecimalJSONParser]
    throttle_classes: list[Any] = []

    def _count_refusal(self, request: Request) -> None:
        throttle = AnonymousThrottle()
        if not throttle.allow_request(request, self):
            raise Throttled(wait=throttle.wait())

    @extend_schema(request=PostbackSerializer, responses={
        200: OpenApiResponse(PostbackTakenSerializer, description="Taken (also for an order we do not know)."),
        400: OpenApiResponse(DetailSerializer, description="Not a JSON object."),
        403: OpenApiResponse(DetailSerializer, description="Missing or bad checksum, or KITE_API_SECRET unset."),
        413: OpenApiResponse(DetailSerializer, description="The body is too large."),
        429: OpenApiResponse(DetailSerializer, description="Too many refused postbacks from this address."),
    })  # fmt: skip
    def post(self, request: Request) -> Response:
        secret = settings.KITE_API_SECRET
        if not secret:
            self._count_refusal(request)
            logger.error("a Kite postback arrived but KITE_API_SECRET is not set: refused")
            return Response(
                {"detail": "postbacks are not accepted: KITE_API_SECRET is not configured"}, status=403
            )
        try:
            data = request.data
        except ParseError:
            self._count_refusal(request)
            raise
        if not isinstance(data, dict):
            self._count_refusal(request)
            return Response({"detail": "a postback is a JSON object"}, status=400)
        if not postback_checksum_valid(data, secret=secret):
            self._count_refusal(request)
            logger.warning("refused a Kite postback with a missing or bad checksum (order_id %r)",
                           str(data.get("order_id", ""))[:32])  # fmt: skip
            return Response({"detail": "missing or bad checksum"}, status=403)
        applied = order_update_from_postback(data=data)
        return Response({"status": "ok", "known": applied.order is not None})
