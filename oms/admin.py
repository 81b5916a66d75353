"""The operator's view of the OMS: orders and their audit trail, trades, positions with
P&L and daily statistics (all read-only: only the OMS services write them), strategies
with their limits and mode, and the kill switch behind a permission and a confirmation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from oms import state as order_state
from oms.api.serializers import payload_redacted, text_redacted
from oms.killswitch import kill_switch_set, kill_switch_status
from oms.models import (
    DailyStats,
    KillSwitchEvent,
    Mode,
    Order,
    OrderEvent,
    Position,
    Strategy,
    StrategyAccess,
    Trade,
)

LIVE_REFUSED = (
    "Switching a strategy to LIVE is not available in this version: orders would go to the exchange with "
    "real money, and that needs the Kite broker, a dedicated permission and a confirmation page (the next "
    "release). Keep it on PAPER."
)


class UsableQueryMixin:
    """A list asked for with a query Django's admin would fail on with a server error
    starts over unfiltered instead, as the admin does for any lookup it cannot use: a NUL
    character (PostgreSQL refuses it in any string), or a date-hierarchy part that is not
    a small number (``datetime()`` overflows on a huge year, and so does the time zone
    conversion on the first and the last year there is)."""

    def _usable(self, key: str, value: str) -> bool:
        if "\x00" in key or "\x00" in value:
            return False
        hierarchy = getattr(self, "date_hierarchy", None)
        if hierarchy and key.startswith(f"{hierarchy}__"):
            if not (value.isascii() and value.isdigit() and len(value) <= 4):
                return False
            # Year 1 in IST is year 0 in UTC, and 9999 has no next year: both overflow.
            return key != f"{hierarchy}__year" or 1 < int(value) < 9999
        return True

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not all(self._usable(key, value) for key, values in request.GET.lists() for value in values):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


class ReadOnlyAdmin(UsableQueryMixin, admin.ModelAdmin):
    """Rows written only by the OMS services: never added, edited or deleted by hand,
    not even by a superuser, and no bulk actions (the delete action included)."""

    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DayFilter(admin.SimpleListFilter):
    """The trading day (IST) of an order's placement or a trade's fill; any other day
    through the date links above the list."""

    title = "day"
    parameter_name = "day"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("today", "Today"),
            ("yesterday", "Yesterday"),
            ("week", "Last 7 days"),
            ("earlier", "Before today"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        field = "placed_at" if queryset.model is Order else "filled_at"
        today = timezone.localdate()
        match self.value():
            case "today":
                return queryset.filter(**{f"{field}__date": today})
            case "yesterday":
                return queryset.filter(**{f"{field}__date": today - timedelta(days=1)})
            case "week":
                return queryset.filter(**{f"{field}__date__gte": today - timedelta(days=6)})
            case "earlier":
                return queryset.filter(**{f"{field}__date__lt": today})
        return queryset


def _payload_shown(payload: Any) -> str:
    return json.dumps(payload_redacted(payload or {}), sort_keys=True, default=str)


def _when(moment: datetime | None) -> str:
    """A time for a list column: compact, in IST (the market's time zone)."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    return local.strftime("%H:%M:%S" if local.date() == timezone.localdate() else "%d %b %Y %H:%M")


def _money_column(field: str, description: str, *, ordering: str | None) -> Any:
    """A changelist column showing ``field`` (a Decimal) as ``_price`` does."""

    def shown(self: Any, obj: Any) -> str:
        return _price(getattr(obj, field))

    return admin.display(description=description, ordering=ordering)(shown)


def _time_column(field: str, description: str, *, ordering: str | None) -> Any:
    """A changelist column showing ``field`` (an aware datetime) in IST, as ``_when`` does."""

    def shown(self: Any, obj: Any) -> str:
        return _when(getattr(obj, field))

    return admin.display(description=description, ordering=ordering)(shown)


def _price(value: Decimal | None) -> str:
    """A price or an amount as a person reads it: 2 places unless more are needed."""
    if value is None:
        return "-"
    return f"{value.quantize(Decimal('0.01')) if value == value.quantize(Decimal('0.01')) else value.normalize():f}"


class OrderEventInline(ReadOnlyInline):
    model = OrderEvent
    fields = ("at", "kind", "source", "actor", "old_status", "new_status", "message", "payload_shown")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name = "audit event"
    verbose_name_plural = "audit trail"

    @admin.display(description="broker's payload")
    def payload_shown(self, event: OrderEvent) -> str:
        return _payload_shown(event.payload)


class TradeInline(ReadOnlyInline):
    model = Trade
    fields = ("trade_id", "filled_at", "transaction_type", "quantity", "price", "realised")
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "placed",
        "strategy",
        "instrument_shown",
        "order_shown",
        "status_shown",
        "filled_shown",
    )
    list_display_links = ("id", "instrument_shown")
    list_filter = (
        "status",
        "strategy",
        DayFilter,
        "broker",
        "transaction_type",
        "order_type",
        "product",
        "source",
    )
    date_hierarchy = "placed_at"
    search_fields = ("=id", "tradingsymbol", "=broker_order_id", "tag")
    list_select_related = ("strategy",)
    inlines = (TradeInline, OrderEventInline)
    list_per_page = 100
    show_full_result_count = False
    fieldsets = (
        ("Order", {"fields": (
            ("strategy", "placed_by", "source"), ("exchange", "tradingsymbol", "instrument_token", "instrument"),
            ("transaction_type", "quantity", "product"), ("order_type", "price", "trigger_price"),
            ("validity", "validity_ttl", "variety", "tag"), ("stop_loss", "target"))}),
        ("State", {"fields": (
            ("status", "risk_rule"), "status_message_shown",
            ("filled_quantity", "pending_quantity", "cancelled_quantity"), ("average_price", "fill_value"),
            ("placed_at", "updated_at"))}),
        ("Broker", {"fields": (("broker", "broker_order_id", "exchange_order_id"), "status_sequence")}),
        ("Idempotency", {"classes": ("collapse",), "fields": ("idempotency_key", "request_fingerprint")}),
    )  # fmt: skip
    readonly_fields = [*(f.name for f in Order._meta.fields), "status_message_shown"]

    placed = _time_column("placed_at", "placed (IST)", ordering="placed_at")

    @admin.display(description="instrument", ordering="tradingsymbol")
    def instrument_shown(self, order: Order) -> str:
        return f"{order.exchange}:{order.tradingsymbol}"

    @admin.display(description="order")
    def order_shown(self, order: Order) -> str:
        text = f"{order.transaction_type} {order.quantity} {order.product} {order.order_type}"
        if order.order_type in ("LIMIT", "SL"):
            text += f" {_price(order.price)}"
        if order.order_type in ("SL", "SL-M"):
            text += f" trigger {_price(order.trigger_price)}"
        return text

    @admin.display(description="status", ordering="status")
    def status_shown(self, order: Order) -> str:
        return f"{order.status} ({order.risk_rule})" if order.risk_rule else order.status

    @admin.display(description="filled")
    def filled_shown(self, order: Order) -> str:
        if not order.filled_quantity:
            return f"0/{order.quantity}"
        return f"{order.filled_quantity}/{order.quantity} @ {_price(order.average_price)}"

    @admin.display(description="status message")
    def status_message_shown(self, order: Order) -> str:
        return text_redacted(order.status_message)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = (
        "trade_id",
        "filled",
        "strategy",
        "instrument_shown",
        "fill_shown",
        "realised",
        "order_link",
    )
    list_filter = ("strategy", DayFilter, "broker", "transaction_type", "product")
    date_hierarchy = "filled_at"
    search_fields = ("=trade_id", "tradingsymbol", "=order__id", "=order__broker_order_id")
    list_select_related = ("strategy", "order")
    list_per_page = 100
    show_full_result_count = False
    readonly_fields = [f.name for f in Trade._meta.fields]

    filled = _time_column("filled_at", "filled (IST)", ordering="filled_at")

    @admin.display(description="instrument", ordering="tradingsymbol")
    def instrument_shown(self, trade: Trade) -> str:
        return f"{trade.exchange}:{trade.tradingsymbol}"

    @admin.display(description="fill")
    def fill_shown(self, trade: Trade) -> str:
        return f"{trade.transaction_type} {trade.quantity} {trade.product} @ {_price(trade.price)}"

    realised_shown = _money_column("realised", "realised", ordering="realised")

    @admin.display(description="order", ordering="order_id")
    def order_link(self, trade: Trade) -> str:
        url = reverse("admin:oms_order_change", args=[trade.order_id])
        return format_html('<a href="{}">#{}</a>', url, trade.order_id)


class OpenFilter(admin.SimpleListFilter):
    title = "position"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Open"), ("no", "Flat")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.exclude(quantity=0)
        if self.value() == "no":
            return queryset.filter(quantity=0)
        return queryset


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    """Marked to market from the latest ticks by the risk monitor every few seconds
    (``OMS_RISK_MONITOR_SECONDS``): P&L as of ``marked at``."""

    list_display = ("strategy", "instrument_shown", "product", "qty", "average", "ltp", "unrealised_shown",
                    "realised_shown", "pnl_shown", "marked")  # fmt: skip
    list_display_links = ("instrument_shown",)
    list_filter = (OpenFilter, "strategy", "product", "exchange")
    search_fields = ("tradingsymbol",)
    list_select_related = ("strategy",)
    list_per_page = 100
    readonly_fields = [f.name for f in Position._meta.fields]

    @admin.display(description="instrument", ordering="tradingsymbol")
    def instrument_shown(self, position: Position) -> str:
        return f"{position.exchange}:{position.tradingsymbol}"

    @admin.display(description="qty", ordering="quantity")
    def qty(self, position: Position) -> int:
        return position.quantity

    average = _money_column("average_price", "avg price", ordering="average_price")

    ltp = _money_column("last_price", "LTP", ordering="last_price")

    unrealised_shown = _money_column("unrealised", "unrealised", ordering="unrealised")

    realised_shown = _money_column("realised", "realised", ordering="realised")

    pnl_shown = _money_column("pnl", "P&L", ordering=None)

    marked = _time_column("marked_at", "marked", ordering="marked_at")


class StrategyForm(forms.ModelForm):
    """A strategy's mode and limits. LIVE is refused in this version; a limit, when set,
    is above zero (to stop a strategy trading, untick *enabled*)."""

    class Meta:
        model = Strategy
        exclude: list[str] = []

    POSITIVE = ("max_order_quantity", "max_order_value", "max_position_quantity", "max_open_positions",
                "max_risk_per_trade_percent", "min_reward_risk", "max_daily_loss", "max_drawdown",
                "max_position_loss", "price_band_percent", "max_order_to_trade_ratio")  # fmt: skip
    PERCENT = ("max_risk_per_trade_percent", "price_band_percent")

    def clean_mode(self) -> str:
        mode = self.cleaned_data["mode"]
        if mode == Mode.LIVE and (self.instance.pk is None or self.instance.mode != Mode.LIVE):
            raise forms.ValidationError(LIVE_REFUSED)
        return mode

    def clean_capital(self) -> Decimal:
        capital = self.cleaned_data["capital"]
        if capital is not None and capital < 0:
            raise forms.ValidationError("Capital cannot be negative.")
        return capital

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in self.POSITIVE:
            value = data.get(name)
            if value is None:
                continue
            if value <= 0:
                self.add_error(
                    name, "Above zero, or blank for the global limit (to stop trading, untick enabled)."
                )
            elif name in self.PERCENT and value > 100:
                self.add_error(name, "A percentage: at most 100.")
        return data


@admin.register(Strategy)
class StrategyAdmin(UsableQueryMixin, admin.ModelAdmin):
    form = StrategyForm
    list_display = ("name", "mode", "enabled", "capital", "max_daily_loss", "max_drawdown", "max_order_value",
                    "updated_at")  # fmt: skip
    list_filter = ("mode", "enabled")
    search_fields = ("name",)
    actions = None
    fieldsets = (
        (None, {"fields": ("name", "description", "mode", "enabled", "capital")}),
        ("Risk limits (blank: the global OMS_* setting)", {"fields": (
            "max_order_quantity", "max_order_value", "max_position_quantity", "max_open_positions",
            "max_risk_per_trade_percent", "min_reward_risk", "max_daily_loss", "max_drawdown", "max_position_loss",
            "price_band_percent", "max_order_to_trade_ratio")}),
    )  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # API users and the audit trail name a strategy: its name stays what it was created with.
        return ("name",) if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # orders keep pointing at their strategy


@admin.register(StrategyAccess)
class StrategyAccessAdmin(UsableQueryMixin, admin.ModelAdmin):
    list_display = ("user", "strategy")
    list_select_related = ("user", "strategy")
    autocomplete_fields = ("user",)


@admin.register(DailyStats)
class DailyStatsAdmin(ReadOnlyAdmin):
    list_display = ("day", "strategy", "orders", "rejected", "trades", "turnover_shown", "realised_shown",
                    "unrealised_shown", "pnl_shown", "peak_shown", "drawdown_shown")  # fmt: skip
    list_filter = ("strategy", "day")
    list_select_related = ("strategy",)

    turnover_shown = _money_column("turnover", "turnover", ordering="turnover")

    realised_shown = _money_column("realised", "realised", ordering="realised")

    unrealised_shown = _money_column("unrealised", "unrealised", ordering="unrealised")

    pnl_shown = _money_column("pnl", "P&L", ordering=None)

    peak_shown = _money_column("peak_pnl", "peak P&L", ordering="peak_pnl")

    drawdown_shown = _money_column("max_drawdown", "max drawdown", ordering="max_drawdown")


class KillSwitchForm(forms.Form):
    action = forms.ChoiceField(choices=[("halted", "Engage: halt all new orders"),
                                        ("reducing", "Engage: only orders that reduce a position"),
                                        ("release", "Release: orders flow again")])  # fmt: skip
    strategy = forms.ModelChoiceField(Strategy.objects.all(), required=False, empty_label="The whole desk")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000)
    cancel_open = forms.BooleanField(
        required=False, label="Cancel open orders", help_text="Also cancel every open order."
    )
    square_off = forms.BooleanField(
        required=False, label="Square off", help_text="Also square off every open position (market orders)."
    )
    confirm = forms.BooleanField(
        required=True, label="I confirm", help_text="This takes effect at once.",
        error_messages={"required": "Tick “I confirm”: the kill switch acts at once, on real orders."},
    )  # fmt: skip

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") != "release" and not (data.get("reason") or "").strip():
            self.add_error("reason", "Say why the kill switch is engaged.")
        if data.get("action") == "release" and (data.get("cancel_open") or data.get("square_off")):
            self.add_error("action", "Cancelling and squaring off go with engaging, not with releasing.")
        return data


STATES = {"halted": "HALTED", "reducing": "REDUCING", "release": "ACTIVE"}


class ScopeFilter(admin.RelatedFieldListFilter):
    """By strategy, where no strategy is the whole desk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.empty_value_display = mark_safe("the whole desk")  # noqa: S308 - a constant


def _kill_switch_shown() -> dict[str, Any]:
    """``kill_switch_status()`` with each event's time as a local (IST) datetime for the page."""
    status = kill_switch_status()
    for step in [status["last_event"], *status["strategies"]]:
        if step is not None:
            step["at_local"] = timezone.localtime(datetime.fromisoformat(step["at"]))
    return status


def _outcome(event: KillSwitchEvent) -> str:
    scope = f"strategy {event.strategy.name}" if event.strategy else "the whole desk"
    text = f"Kill switch {event.state} for {scope}."
    result = event.result or {}
    if "cancelled" in result:
        text += f" Open orders cancelled: {result['cancelled']} ({result.get('cancel_failed', 0)} failed)."
    if "square_off_orders" in result:
        text += (
            f" Square-off orders placed: {result['square_off_orders']}"
            f" ({result.get('square_off_refused', 0)} refused)."
        )
    return text


@admin.register(KillSwitchEvent)
class KillSwitchEventAdmin(ReadOnlyAdmin):
    list_display = ("when", "state_shown", "scope", "who", "reason", "actions_shown")
    list_filter = ("state", "automatic", ("strategy", ScopeFilter))
    list_select_related = ("strategy", "by")
    date_hierarchy = "at"
    list_per_page = 100
    change_list_template = "admin/oms/killswitchevent/change_list.html"

    when = _time_column("at", "at (IST)", ordering="at")

    @admin.display(description="state", ordering="state")
    def state_shown(self, event: KillSwitchEvent) -> str:
        return format_html("<strong>{}</strong>", event.state) if event.state != "ACTIVE" else event.state

    @admin.display(description="for", ordering="strategy__name")
    def scope(self, event: KillSwitchEvent) -> str:
        return event.strategy.name if event.strategy else "the whole desk"

    @admin.display(description="by")
    def who(self, event: KillSwitchEvent) -> str:
        if event.automatic:
            return f"automatic ({event.rule})" if event.rule else "automatic"
        return event.by.get_username() if event.by else "system"

    @admin.display(description="also")
    def actions_shown(self, event: KillSwitchEvent) -> str:
        result = event.result or {}
        done = []
        if event.cancel_open:
            done.append(f"cancelled {result.get('cancelled', 0)} open orders")
        if event.square_off:
            done.append(f"{result.get('square_off_orders', 0)} square-off orders")
        return ", ".join(done) or "-"

    def get_urls(self) -> list[Any]:
        urls = super().get_urls()
        operate = path(
            "operate/", self.admin_site.admin_view(self.operate_view), name="oms_killswitchevent_operate"
        )
        return [operate, *urls]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "kill_switch": _kill_switch_shown(),
                         "can_operate": request.user.has_perm("oms.operate_kill_switch")}  # fmt: skip
        return super().changelist_view(request, extra_context=extra_context)

    def operate_view(self, request: HttpRequest) -> HttpResponse:
        """The confirmation page: what the switch is now, what engaging would touch, and
        a form that needs a reason and an explicit "I confirm"."""
        if not request.user.has_perm("oms.operate_kill_switch"):
            raise PermissionDenied
        form = KillSwitchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            event = kill_switch_set(state=STATES[data["action"]], by=request.user, reason=data["reason"],
                                    strategy=data["strategy"], cancel_open=data["cancel_open"],
                                    square_off=data["square_off"])  # fmt: skip
            level = messages.SUCCESS if event.state == "ACTIVE" else messages.WARNING
            self.message_user(request, _outcome(event), level)
            return HttpResponseRedirect(reverse("admin:oms_killswitchevent_changelist"))
        working = sorted(order_state.WORKING | order_state.PENDING)
        context = {
            **self.admin_site.each_context(request), "title": "Engage or release the kill switch", "form": form,
            "opts": self.model._meta, "kill_switch": _kill_switch_shown(),
            "open_orders": Order.objects.filter(status__in=working).count(),
            "open_positions": Position.objects.exclude(quantity=0).count(),
        }  # fmt: skip
        return TemplateResponse(request, "admin/oms/killswitchevent/operate.html", context)
