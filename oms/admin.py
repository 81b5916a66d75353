"""The operator's view of the OMS: orders and their audit trail (read-only), trades,
positions with P&L, strategies with their limits and mode, and the kill switch."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

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


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the OMS services: never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DayFilter(admin.SimpleListFilter):
    title = "day"
    parameter_name = "day"

    def lookups(self, request, model_admin):
        return [("today", "Today"), ("earlier", "Before today")]

    def queryset(self, request, queryset):
        field = "placed_at" if queryset.model is Order else "filled_at"
        today = timezone.localdate()
        if self.value() == "today":
            return queryset.filter(**{f"{field}__date": today})
        if self.value() == "earlier":
            return queryset.filter(**{f"{field}__date__lt": today})
        return queryset


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    fields = ("at", "kind", "source", "actor", "old_status", "new_status", "message", "payload")
    readonly_fields = fields
    ordering = ("at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class TradeInline(admin.TabularInline):
    model = Trade
    extra = 0
    can_delete = False
    fields = ("trade_id", "filled_at", "quantity", "price", "realised")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "placed_at", "strategy", "tradingsymbol", "exchange", "transaction_type", "quantity",
                    "order_type", "price", "status", "filled_quantity", "average_price", "risk_rule", "broker")  # fmt: skip
    list_filter = ("status", "strategy", DayFilter, "broker", "transaction_type", "order_type", "product")
    search_fields = ("tradingsymbol", "broker_order_id", "tag")
    list_select_related = ("strategy",)
    inlines = (TradeInline, OrderEventInline)
    readonly_fields = [f.name for f in Order._meta.fields]
    list_per_page = 100
    show_full_result_count = False


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("trade_id", "filled_at", "strategy", "tradingsymbol", "transaction_type", "quantity", "price",
                    "realised", "order")  # fmt: skip
    list_filter = ("strategy", DayFilter, "broker", "transaction_type")
    search_fields = ("trade_id", "tradingsymbol")
    list_select_related = ("strategy", "order")
    readonly_fields = [f.name for f in Trade._meta.fields]


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ("strategy", "tradingsymbol", "exchange", "product", "quantity", "average_price", "last_price",
                    "realised", "unrealised", "m2m", "marked_at")  # fmt: skip
    list_filter = ("strategy", "product", "exchange")
    search_fields = ("tradingsymbol",)
    list_select_related = ("strategy",)
    readonly_fields = [f.name for f in Position._meta.fields]


class StrategyForm(forms.ModelForm):
    class Meta:
        model = Strategy
        exclude: list[str] = []

    def clean_mode(self) -> str:
        mode = self.cleaned_data["mode"]
        if mode == Mode.LIVE and (self.instance.pk is None or self.instance.mode != Mode.LIVE):
            raise forms.ValidationError(
                "Switching a strategy to LIVE is not available in this version: live trading arrives with the Kite "
                "broker. Keep it on PAPER."
            )
        return mode


@admin.register(Strategy)
class StrategyAdmin(admin.ModelAdmin):
    form = StrategyForm
    list_display = ("name", "mode", "enabled", "capital", "max_daily_loss", "max_order_value", "updated_at")
    list_filter = ("mode", "enabled")
    search_fields = ("name",)
    fieldsets = (
        (None, {"fields": ("name", "description", "mode", "enabled", "capital")}),
        ("Risk limits (blank: the global OMS_* setting)", {"fields": (
            "max_order_quantity", "max_order_value", "max_position_quantity", "max_open_positions",
            "max_risk_per_trade_percent", "min_reward_risk", "max_daily_loss", "max_drawdown", "max_position_loss",
            "price_band_percent", "max_order_to_trade_ratio")}),
    )  # fmt: skip

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # orders keep pointing at their strategy


@admin.register(StrategyAccess)
class StrategyAccessAdmin(admin.ModelAdmin):
    list_display = ("user", "strategy")
    autocomplete_fields = ("user",)


@admin.register(DailyStats)
class DailyStatsAdmin(ReadOnlyAdmin):
    list_display = ("day", "strategy", "orders", "rejected", "trades", "turnover", "realised", "unrealised",
                    "peak_pnl", "max_drawdown")  # fmt: skip
    list_filter = ("strategy", "day")


class KillSwitchForm(forms.Form):
    action = forms.ChoiceField(choices=[("halted", "Engage: halt all new orders"),
                                        ("reducing", "Engage: only orders that reduce a position"),
                                        ("release", "Release: orders flow again")])  # fmt: skip
    strategy = forms.ModelChoiceField(Strategy.objects.all(), required=False, empty_label="The whole desk")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    cancel_open = forms.BooleanField(required=False, help_text="Also cancel every open order.")
    square_off = forms.BooleanField(
        required=False, help_text="Also square off every open position (market orders)."
    )
    confirm = forms.BooleanField(required=True, label="I confirm", help_text="This takes effect at once.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") != "release" and not (data.get("reason") or "").strip():
            self.add_error("reason", "Say why the kill switch is engaged.")
        return data


@admin.register(KillSwitchEvent)
class KillSwitchEventAdmin(ReadOnlyAdmin):
    list_display = (
        "at",
        "state",
        "strategy",
        "by",
        "automatic",
        "rule",
        "reason",
        "cancel_open",
        "square_off",
    )
    list_filter = ("state", "automatic", "strategy")
    change_list_template = "admin/oms/killswitchevent/change_list.html"

    def get_urls(self):
        urls = super().get_urls()
        operate = path(
            "operate/", self.admin_site.admin_view(self.operate_view), name="oms_killswitchevent_operate"
        )
        return [operate, *urls]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "kill_switch": kill_switch_status(),
                         "can_operate": request.user.has_perm("oms.operate_kill_switch")}  # fmt: skip
        return super().changelist_view(request, extra_context=extra_context)

    def operate_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("oms.operate_kill_switch"):
            raise PermissionDenied
        form = KillSwitchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            state = {"halted": "HALTED", "reducing": "REDUCING", "release": "ACTIVE"}[data["action"]]
            event = kill_switch_set(state=state, by=request.user, reason=data["reason"], strategy=data["strategy"],
                                    cancel_open=data["cancel_open"], square_off=data["square_off"])  # fmt: skip
            self.message_user(request, f"Kill switch: {event}. {event.result or ''}", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:oms_killswitchevent_changelist"))
        context = {**self.admin_site.each_context(request), "title": "Kill switch", "form": form,
                   "opts": self.model._meta, "kill_switch": kill_switch_status()}  # fmt: skip
        return TemplateResponse(request, "admin/oms/killswitchevent/operate.html", context)
