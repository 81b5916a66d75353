"""The operator's console for the instrument master: where streaming is switched on."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseModelFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from instruments.models import Instrument, Source, SyncRun
from instruments.presets import PRESET_CHOICES
from instruments.selectors import (
    active_count,
    feed_capacity,
    instrument_search_q,
    instrument_search_rank,
)
from instruments.selectors import (
    search_term as search_term_of,
)
from instruments.services import (
    feed_limit_check,
    instrument_sync_enqueue,
    instruments_activate,
    instruments_deactivate,
)
from instruments.sync.errors import ActivationLimitExceeded, QueueUnavailable, SyncError


class ExpiryFilter(admin.SimpleListFilter):
    title = "expiry"
    parameter_name = "expiry_state"

    def lookups(self, request, model_admin):
        return [("upcoming", "Upcoming"), ("expired", "Expired"), ("none", "No expiry")]

    def queryset(self, request, queryset):
        today = timezone.localdate()
        if self.value() == "upcoming":
            return queryset.filter(expiry__gte=today)
        if self.value() == "expired":
            return queryset.filter(expiry__lt=today)
        if self.value() == "none":
            return queryset.filter(expiry__isnull=True)
        return queryset


class ListingFilter(admin.SimpleListFilter):
    title = "listing state"
    parameter_name = "listing"

    def lookups(self, request, model_admin):
        return [("listed", "Listed"), ("delisted", "Delisted")]

    def queryset(self, request, queryset):
        if self.value() == "listed":
            return queryset.filter(is_listed=True)
        if self.value() == "delisted":
            return queryset.filter(is_listed=False)
        return queryset


def _feed_summary() -> str:
    from ingestion.status import feed_status

    status = feed_status()
    if status is None or not status.get("running"):
        return "not running (start `manage.py run_ingestion` or `make run`)"
    text = (
        f"{status['state']} ({status['feed']}), {status['subscribed']} subscribed, "
        f"{status['ticks_per_second']} ticks/s, {status['reconnects']} reconnects"
    )
    if status.get("over_limit"):
        text += f"; {status['over_limit']} active instruments over the limit are NOT streaming"
    if status.get("error"):
        text += f"; last error: {status['error']}"
    return text


class ActivationFormSet(BaseModelFormSet):
    """Checks a changelist save as a whole: delisted rows cannot stream, and the net
    activations must fit the feed (the service checks again under a lock on save)."""

    def clean(self) -> None:
        super().clean()
        activating = deactivating = 0
        for form in self.forms:
            if "is_active" not in form.changed_data:
                continue
            instrument = form.instance
            if form.cleaned_data.get("is_active"):
                if not instrument.is_listed:
                    form.add_error("is_active", "Delisted instruments cannot stream.")
                elif instrument.source != Source.KITE:
                    form.add_error("is_active", "Only Kite instruments can stream.")
                activating += 1
            else:
                deactivating += 1
        if activating:
            try:
                feed_limit_check(would_be=active_count() + activating - deactivating)
            except ActivationLimitExceeded as exc:
                raise ValidationError(str(exc)) from None


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    # What an operator acts on first (symbol, Is active, stream mode), then what tells
    # contracts apart; segment, tick size and the long name are on the change page.
    list_display = (
        "tradingsymbol", "is_active", "stream_mode", "exchange", "kind", "expiry_shown", "strike_shown", "lot", "token",
        "listed",
    )  # fmt: skip
    list_display_links = ("tradingsymbol",)
    list_editable = ("is_active", "stream_mode")
    list_filter = (
        "is_active", ListingFilter, "exchange", "segment", "instrument_type", ExpiryFilter, "source", "stream_mode",
    )  # fmt: skip
    search_fields = ("tradingsymbol", "name")  # the search itself is ``selectors.instrument_search_q``
    search_help_text = "Symbol prefix, name fragment or exact instrument token: exact matches first, then prefixes, then the rest."
    list_per_page = 100
    show_full_result_count = False
    ordering = ("tradingsymbol", "id")  # one sorted column: the same symbol on NSE and BSE side by side
    actions = ("activate_selected", "deactivate_selected")
    readonly_fields = (
        "source", "instrument_token", "exchange_token", "instrument_key", "tradingsymbol", "name", "last_price",
        "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange", "is_listed",
        "delisted_at", "first_seen_at", "last_seen_at", "updated_at",
    )  # fmt: skip
    fieldsets = (
        ("Streaming", {"fields": ("is_active", "stream_mode")}),
        (
            "Contract (from the broker's dump)",
            {
                "fields": (
                    "source",
                    "exchange",
                    "segment",
                    "tradingsymbol",
                    "name",
                    "instrument_type",
                    "expiry",
                    "strike",
                    "lot_size",
                    "tick_size",
                    "last_price",
                )
            },  # fmt: skip
        ),
        ("Identifiers", {"fields": ("instrument_token", "exchange_token", "instrument_key")}),
        ("Listing", {"fields": ("is_listed", "delisted_at", "first_seen_at", "last_seen_at", "updated_at")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # instruments come from syncs

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # soft delete only: a sync delists

    @admin.display(description="type", ordering="instrument_type")
    def kind(self, obj: Instrument) -> str:
        return obj.instrument_type

    @admin.display(description="expiry", ordering="expiry", empty_value="")
    def expiry_shown(self, obj: Instrument) -> str:
        return obj.expiry.isoformat() if obj.expiry else ""

    @admin.display(description="token", ordering="instrument_token", empty_value="")
    def token(self, obj: Instrument) -> int | None:
        return obj.instrument_token

    @admin.display(description="lot", ordering="lot_size")
    def lot(self, obj: Instrument) -> int:
        return obj.lot_size

    @admin.display(description="listed", boolean=True, ordering="is_listed")
    def listed(self, obj: Instrument) -> bool:
        return obj.is_listed

    @admin.display(description="strike", ordering="strike", empty_value="")
    def strike_shown(self, obj: Instrument) -> str:
        """Options only (an equity's strike is a meaningless 0.0000), without trailing zeros."""
        if obj.instrument_type not in ("CE", "PE"):
            return ""
        text = format(obj.strike, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text

    def get_search_results(self, request, queryset, search_term):
        term = search_term_of(search_term)
        if not term:
            return queryset, False
        return queryset.filter(instrument_search_q(term)), False

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        """While searching, best matches first (the API's ranking), unless a column was clicked."""
        term = search_term_of(request.GET.get("q", ""))
        if term:
            return [instrument_search_rank(term).asc(), "tradingsymbol"]
        return list(super().get_ordering(request))

    def get_changelist_formset(self, request: HttpRequest, **kwargs: Any):
        return super().get_changelist_formset(request, formset=ActivationFormSet, **kwargs)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if any("\x00" in value for values in request.GET.lists() for value in values[1]):
            return HttpResponseBadRequest("Query parameters cannot contain NUL characters.")
        count, capacity = active_count(), feed_capacity()
        extra_context = {
            **(extra_context or {}),
            "feed_active_count": count,
            "feed_capacity": capacity,
            "feed_over_limit": count > capacity,
            "feed_status": _feed_summary(),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def save_model(self, request: HttpRequest, obj: Instrument, form: forms.ModelForm, change: bool) -> None:
        """``is_active`` goes through the services (limit, delisting, cache); the rest is saved as is."""
        by = request.user.get_username()
        if "stream_mode" in form.changed_data:
            obj.save(update_fields=["stream_mode"])
        if "is_active" not in form.changed_data:
            return
        try:
            if obj.is_active:
                result = instruments_activate(ids=[obj.pk], by=by)
                for reason in result.refused:
                    self.message_user(request, f"Not activated: {reason}", messages.ERROR)
                for name in result.expired:
                    self.message_user(
                        request, f"{name} has expired; it will stop streaming tonight.", messages.WARNING
                    )
            else:
                instruments_deactivate(ids=[obj.pk], by=by)
        except ActivationLimitExceeded as exc:
            self.message_user(request, f"{obj}: {exc}", messages.ERROR)

    @admin.action(description="Activate (stream) selected instruments", permissions=["change"])
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[Instrument]) -> None:
        try:
            result = instruments_activate(
                ids=list(queryset.values_list("pk", flat=True)), by=request.user.get_username()
            )
        except ActivationLimitExceeded as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request,
            f"{result.changed} instruments activated ({result.unchanged} already active); "
            f"{result.active_count} of {result.capacity} now active.",
            messages.SUCCESS,
        )
        if result.refused:
            shown = "; ".join(result.refused[:10])
            self.message_user(request, f"{len(result.refused)} refused: {shown}", messages.ERROR)
        if result.expired:
            shown = ", ".join(result.expired[:10])
            self.message_user(
                request, f"{len(result.expired)} have already expired: {shown}", messages.WARNING
            )

    @admin.action(description="Deactivate (stop streaming) selected instruments", permissions=["change"])
    def deactivate_selected(self, request: HttpRequest, queryset: QuerySet[Instrument]) -> None:
        result = instruments_deactivate(
            ids=list(queryset.values_list("pk", flat=True)), by=request.user.get_username()
        )
        self.message_user(
            request,
            f"{result.changed} instruments deactivated; {result.active_count} of {result.capacity} now active.",
            messages.SUCCESS,
        )


class StartSyncForm(forms.Form):
    source = forms.ChoiceField(choices=Source.choices, initial=Source.KITE)
    url = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Leave empty for the configured URL of the source. Only the configured dump hosts (and "
        "SYNC_ALLOWED_HOSTS) can be fetched; credentials are configured, never put in the URL.",
    )
    preset = forms.ChoiceField(
        choices=[("", "Leave active flags alone"), *[(c, c) for c in PRESET_CHOICES if c != "all"]],
        required=False,
        help_text="Make the active set exactly this preset (the command's --filter).",
    )
    dry_run = forms.BooleanField(required=False, help_text="Report what would change; change nothing.")
    force = forms.BooleanField(required=False, help_text="Accept a dump far smaller than the last good one.")


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = (
        "started_at", "source", "status", "scope", "rows_read", "inserted", "updated", "unchanged", "delisted",
        "relisted", "rejected", "duration_ms", "triggered_by",
    )  # fmt: skip
    list_filter = ("status", "source", "dry_run")
    change_list_template = "admin/instruments/syncrun/change_list.html"
    readonly_fields = [f.name for f in SyncRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self):
        urls = super().get_urls()
        start = path(
            "start/", self.admin_site.admin_view(self.start_sync_view), name="instruments_syncrun_start"
        )
        return [start, *urls]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "can_start_sync": request.user.has_perm("instruments.run_sync"),
        }
        return super().changelist_view(request, extra_context=extra_context)

    def start_sync_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("instruments.run_sync"):
            raise PermissionDenied
        form = StartSyncForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                queued = instrument_sync_enqueue(**form.cleaned_data, by=request.user.get_username())
            except QueueUnavailable as exc:
                form.add_error(None, str(exc))
            except SyncError as exc:
                form.add_error("url" if form.cleaned_data.get("url") else None, str(exc))
            else:
                self.message_user(
                    request,
                    f"Sync queued (task {queued.task_id}). Its result appears here when the worker has run it.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:instruments_syncrun_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Start an instrument sync",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/instruments/syncrun/start.html", context)
