"""The operator's view of the OMS: orders and their audit trail, trades, positions with
P&L and daily statistics (all read-only: only the OMS services write them), strategies
with their limits and mode, and the kill switch behind a permission and a confirmation."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ERROR_FLAG
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from oms import state as order_state
from oms.api.serializers import payload_redacted, text_redacted
from oms.freeze_limits import FREEZE_EXCHANGES, UNDERLYING_PATTERN
from oms.killswitch import kill_switch_set, kill_switch_status
from oms.models import (
    DailyStats,
    FreezeLimit,
    KillSwitchEvent,
    Mode,
    Order,
    OrderEvent,
    Position,
    Strategy,
    StrategyAccess,
    StrategyModeChange,
    Trade,
)
from oms.strategy_mode import (
    PERMISSION as MODE_PERMISSION,
)
from oms.strategy_mode import (
    ModeSwitchRefused,
    amount_shown,
    market_protection_shown,
    strategy_limits_shown,
    strategy_mode_problems,
    strategy_mode_set,
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


ALGO_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
STRATEGY_LIMITS = ("max_order_quantity", "max_order_value", "max_position_quantity", "max_open_positions",
                   "max_risk_per_trade_percent", "min_reward_risk", "max_daily_loss", "max_drawdown",
                   "max_position_loss", "price_band_percent", "max_order_to_trade_ratio")  # fmt: skip
STRATEGY_KITE = ("algo_id", "market_protection", "allow_autoslice")
MODE_HISTORY_SHOWN = 20


class StrategyForm(forms.ModelForm):
    """A strategy's limits and Kite settings. Its mode is not here: it changes only on the
    switch page (``StrategyAdmin.mode_view``). A limit, when set, is above zero (to stop a
    strategy trading, untick *enabled*)."""

    class Meta:
        model = Strategy
        fields = ["name", "description", "enabled", "capital", *STRATEGY_LIMITS, *STRATEGY_KITE]
        labels = {"algo_id": "Exchange algo ID", "allow_autoslice": "Allow autoslice"}

    POSITIVE = STRATEGY_LIMITS
    PERCENT = ("max_risk_per_trade_percent", "price_band_percent")

    def clean_capital(self) -> Decimal:
        capital = self.cleaned_data["capital"]
        if capital is not None and capital < 0:
            raise forms.ValidationError("Capital cannot be negative.")
        return capital

    def clean_algo_id(self) -> str:
        algo_id = (self.cleaned_data.get("algo_id") or "").strip()
        if algo_id and not ALGO_ID.fullmatch(algo_id):
            raise forms.ValidationError("The exchange's algo ID: letters, digits, '-' and '_' only.")
        return algo_id

    def clean_market_protection(self) -> Decimal | None:
        value = self.cleaned_data.get("market_protection")
        if value is None or value == -1 or 0 < value <= 100:
            return value
        raise forms.ValidationError(
            "-1 (or blank) for the exchange's automatic protection, or a percent above 0, at most 100."
        )

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


class ModeSwitchForm(forms.Form):
    """The switch page's form: the strategy's name typed out, and an optional note."""

    mode = forms.ChoiceField(choices=Mode.choices, widget=forms.HiddenInput)
    confirm_name = forms.CharField(label="Type the strategy's name", max_length=64, required=True)
    note = forms.CharField(
        label="Note", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why, for the audit trail (optional).",
    )  # fmt: skip

    def __init__(self, *args: Any, strategy: Strategy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.strategy = strategy
        confirm = self.fields["confirm_name"]
        confirm.widget.attrs.update({"autocomplete": "off", "spellcheck": "false", "class": "vTextField"})
        confirm.error_messages["required"] = f"Type the strategy's name, {strategy.name}, to confirm."

    def clean_confirm_name(self) -> str:
        typed = self.cleaned_data["confirm_name"].strip()
        if typed != self.strategy.name:
            raise forms.ValidationError(
                f"That is not the strategy's name: type {self.strategy.name} to confirm."
            )
        return typed


@admin.register(Strategy)
class StrategyAdmin(UsableQueryMixin, admin.ModelAdmin):
    form = StrategyForm
    list_display = ("name", "mode_listed", "enabled", "capital", "max_daily_loss", "max_drawdown",
                    "max_order_value", "updated_at")  # fmt: skip
    list_filter = ("mode", "enabled")
    search_fields = ("name",)
    actions = None
    change_form_template = "admin/oms/strategy/change_form.html"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        head = ("name", "description", "mode_shown", "enabled", "capital") if obj else (
            "name", "description", "enabled", "capital")  # fmt: skip
        fieldsets: list[Any] = [
            (None, {"fields": head}),
            ("Risk limits (blank: the global OMS_* setting)", {"fields": STRATEGY_LIMITS}),
            ("Kite (LIVE orders)", {"fields": STRATEGY_KITE}),
        ]
        if obj is not None:
            fieldsets.append(("Mode changes (PAPER / LIVE)", {"fields": ("mode_history",)}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        # API users and the audit trail name a strategy: its name stays what it was created with.
        return ("name", "mode_shown", "mode_history") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # orders keep pointing at their strategy

    @admin.display(description="mode", ordering="mode")
    def mode_listed(self, strategy: Strategy) -> str:
        return (
            format_html("<strong>{}</strong>", strategy.mode) if strategy.mode == Mode.LIVE else strategy.mode
        )

    @admin.display(description="mode")
    def mode_shown(self, strategy: Strategy) -> str:
        if strategy.mode == Mode.LIVE:
            return mark_safe("<strong>LIVE</strong>: its orders go to Kite, with real money.")  # noqa: S308 - a constant
        return "PAPER: its orders are filled by the paper broker (simulated); nothing reaches an exchange."

    @admin.display(description="latest")
    def mode_history(self, strategy: Strategy) -> str:
        changes = list(strategy.mode_changes.order_by("-at", "-id")[:MODE_HISTORY_SHOWN])
        if not changes:
            return "Never switched: it has been PAPER since it was created."
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
            ((_when(c.at), c.old_mode, c.new_mode, c.by_username, c.note or "-") for c in changes),
        )  # fmt: skip
        everything = (
            reverse("admin:oms_strategymodechange_changelist") + f"?strategy__id__exact={strategy.pk}"
        )
        return format_html(
            '<table id="mode-history"><thead><tr><th>at (IST)</th><th>switch</th><th>by</th><th>note</th></tr>'
            '</thead><tbody>{}</tbody></table><p><a href="{}">All mode changes of {}</a></p>',
            rows, everything, strategy.name,
        )  # fmt: skip

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:  # fmt: skip
        extra_context = {**(extra_context or {}), "can_switch_mode": request.user.has_perm(MODE_PERMISSION)}
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    def get_urls(self) -> list[Any]:
        switch = path(
            "<path:object_id>/mode/", self.admin_site.admin_view(self.mode_view), name="oms_strategy_mode"
        )
        return [switch, *super().get_urls()]

    def mode_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The confirmation page of a switch between PAPER and LIVE: what the strategy is and
        may do, what the switch means, what stands in its way, and the name typed to confirm."""
        if not request.user.has_perm(MODE_PERMISSION):
            raise PermissionDenied
        strategy = self.get_object(request, unquote(object_id))
        if strategy is None:
            raise Http404("No such strategy.")
        target = Mode.PAPER if strategy.mode == Mode.LIVE else Mode.LIVE
        form = ModeSwitchForm(request.POST or None, strategy=strategy, initial={"mode": target})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                change = strategy_mode_set(strategy_id=strategy.pk, mode=data["mode"], by=request.user,
                                           confirmation=data["confirm_name"], note=data["note"])  # fmt: skip
            except ModeSwitchRefused as refused:
                strategy.refresh_from_db()
                if strategy.mode == data["mode"]:  # switched by someone else since the page was shown
                    self.message_user(request, " ".join(refused.reasons) + " Review the page again.",
                                      messages.WARNING)  # fmt: skip
                    return HttpResponseRedirect(request.path)
                shown = strategy_mode_problems(strategy=strategy, mode=target)  # listed on the page anyway
                for reason in refused.reasons:
                    if reason not in shown:
                        form.add_error(None, reason)
            else:
                text = f"Switched from {change.old_mode} to {change.new_mode} on the confirmation page."
                self.log_change(request, strategy, text)
                level = messages.WARNING if change.new_mode == Mode.LIVE else messages.SUCCESS
                self.message_user(request, f"Strategy {strategy.name} is now {change.new_mode}.", level)
                return HttpResponseRedirect(reverse("admin:oms_strategy_change", args=[strategy.pk]))
        context = {
            **self.admin_site.each_context(request), "title": f"Switch strategy {strategy.name} to {target}",
            "opts": self.opts, "original": strategy, "strategy": strategy, "target": target, "form": form,
            "problems": strategy_mode_problems(strategy=strategy, mode=target),
            "limits": strategy_limits_shown(strategy),
            "market_protection": market_protection_shown(strategy.market_protection),
            "capital": amount_shown(strategy.capital),
        }  # fmt: skip
        return TemplateResponse(request, "admin/oms/strategy/mode.html", context)


@admin.register(StrategyModeChange)
class StrategyModeChangeAdmin(ReadOnlyAdmin):
    """The audit trail of PAPER / LIVE switches (written only by ``oms.strategy_mode``)."""

    list_display = ("when", "strategy", "old_mode", "new_mode", "by_username", "note")
    list_filter = ("new_mode", "strategy")
    list_select_related = ("strategy",)
    date_hierarchy = "at"
    readonly_fields = [f.name for f in StrategyModeChange._meta.fields]

    when = _time_column("at", "at (IST)", ordering="at")


class FreezeLimitForm(forms.ModelForm):
    exchange = forms.ChoiceField(choices=[(code, label) for code, label in FREEZE_EXCHANGES.items()])

    class Meta:
        model = FreezeLimit
        fields = ("exchange", "underlying", "freeze_quantity")

    def clean_underlying(self) -> str:
        underlying = self.cleaned_data["underlying"].strip().upper()
        if not UNDERLYING_PATTERN.fullmatch(underlying):
            raise forms.ValidationError(
                "The underlying as the instrument dump's name has it (NIFTY, BANKNIFTY, M&M): letters, digits, "
                "'&', '-', '_' and '.'."
            )
        return underlying

    def clean_freeze_quantity(self) -> int:
        quantity = self.cleaned_data["freeze_quantity"]
        if quantity < 1:
            raise forms.ValidationError("At least 1 (units per order, not lots).")
        return quantity


@admin.register(FreezeLimit)
class FreezeLimitAdmin(UsableQueryMixin, admin.ModelAdmin):
    """The exchanges' freeze quantities: an F&O order above its underlying's is refused with
    the limit named, or sliced by Kite when the strategy allows autoslice. Seeded with the
    published index values; ``manage.py freeze_limits`` loads NSE's file; staff with the
    model permissions edit rows here."""

    form = FreezeLimitForm
    list_display = ("underlying", "exchange", "freeze_quantity", "source", "updated")
    list_filter = ("exchange", "source")
    search_fields = ("underlying",)
    ordering = ("exchange", "underlying")
    list_per_page = 200

    updated = _time_column("updated_at", "updated (IST)", ordering="updated_at")

    def save_model(self, request: HttpRequest, obj: FreezeLimit, form: Any, change: bool) -> None:
        obj.source = "admin"
        super().save_model(request, obj, form, change)


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


from oms import reconciliation_admin  # noqa: E402,F401
