"""``GET /api/stats/daily/``: each strategy's closed trading days (``oms.endofday``)."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from oms.api.serializers import money_out
from oms.api.views import STRATEGY_PARAMETER, OmsPagination, _filter_strategy
from oms.models import DailyStats
from oms.selectors import daily_stats_visible_to


class DailyStatsSerializer(serializers.ModelSerializer):
    strategy: Any = serializers.SlugRelatedField(slug_field="name", read_only=True)
    turnover = money_out(help_text="Sum of quantity x price of the day's fills.")
    realised = money_out()
    unrealised = money_out(help_text="The open positions as last marked (at the close).")
    pnl = money_out(help_text="Gross: realised + unrealised.")
    charges = money_out(
        allow_null=True, help_text="Zerodha's charges on the day's trades; null: not computable (see detail)."
    )
    charges_detail = serializers.JSONField(
        read_only=True, help_text='Each charge (decimal strings), or {"error": why charges is null}.'
    )
    net_pnl = money_out(allow_null=True, help_text="pnl - charges; null while charges is.")
    order_to_trade_ratio = serializers.DecimalField(
        max_digits=12,
        decimal_places=2,
        read_only=True,
        allow_null=True,
        help_text="orders / trades; null: no trades.",
    )
    peak_pnl = money_out()
    max_drawdown = money_out()
    closed_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="When the end of day wrote it; null: the day is still running.",
    )

    class Meta:
        model = DailyStats
        fields = ("strategy", "day", "orders", "rejected", "trades", "turnover", "realised", "unrealised", "pnl",
                  "charges", "charges_detail", "net_pnl", "order_to_trade_ratio", "peak_pnl", "max_drawdown",
                  "closed_at", "updated_at")  # fmt: skip
        read_only_fields = fields


def _date(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError({name: f"{raw[:20]!r} is not a date; use YYYY-MM-DD (IST)"}) from None


@extend_schema(
    parameters=[
        STRATEGY_PARAMETER,
        OpenApiParameter(
            "day_from", OpenApiTypes.DATE, description="From this trading day (YYYY-MM-DD, IST)."
        ),
        OpenApiParameter("day_to", OpenApiTypes.DATE, description="Up to this trading day, included."),
    ]
)
class DailyStatsView(generics.ListAPIView):
    """Each strategy's trading days, newest first: orders, trades, turnover, P&L, charges, net
    P&L, order-to-trade ratio. A user tied to a strategy sees only that strategy's days."""

    serializer_class = DailyStatsSerializer
    pagination_class = OmsPagination
    filterset_class = None

    def get_queryset(self) -> QuerySet[DailyStats]:
        rows = _filter_strategy(daily_stats_visible_to(user=self.request.user), self.request)
        day_from, day_to = _date(self.request, "day_from"), _date(self.request, "day_to")
        if day_from and day_to and day_from > day_to:
            raise ValidationError({"day_to": f"{day_to} is before day_from {day_from}"})
        if day_from:
            rows = rows.filter(day__gte=day_from)
        if day_to:
            rows = rows.filter(day__lte=day_to)
        return rows.order_by("-day", "strategy__name")
