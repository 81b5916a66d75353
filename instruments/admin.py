"""The operator's console for the instrument master: where streaming is switched on."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseModelFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from instruments.models import Instrument, Source, SyncRun
from instruments.presets import FILTER_CHOICES
from instruments.selectors import active_count, feed_capacity
from instruments.services import feed_limit_check, instruments_activate, instruments_deactivate
from instruments.sync.errors import ActivationLimitExceeded


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
    list_display = (
        "tradingsymbol", "name", "exchange", "segment", "instrument_type", "expiry", "strike", "lot_size",
        "tick_size", "instrument_token", "is_active", "stream_mode", "is_listed",
    )  # fmt: skip
    list_display_links = ("tradingsymbol",)
    list_editable = ("is_active", "stream_mode")
    list_filter = (
        "is_active", ListingFilter, "exchange", "segment", "instrument_type", ExpiryFilter, "source", "stream_mode",
    )  # fmt: skip
    search_fields = ("tradingsymbol", "name")
    search_help_text = "Trading symbol or name (any part), or an exact instrument token."
    list_per_page = 100
    show_full_result_count = False
    ordering = ("exchange", "tradingsymbol")
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

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if term.isdigit():
            return queryset.filter(instrument_token=int(term)), False
        return super().get_search_results(request, queryset, term)

    def get_changelist_formset(self, request: HttpRequest, **kwargs: Any):
        return super().get_changelist_formset(request, formset=ActivationFormSet, **kwargs)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
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
    url = forms.URLField(
        required=False, assume_scheme="https", help_text="Leave empty for the configured URL of the source."
    )
    filter = forms.ChoiceField(
        choices=[("", "Leave active flags alone"), *[(c, c) for c in FILTER_CHOICES if c != "all"]],
        required=False,
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
            from instruments.api.views import queue_sync

            task_id = queue_sync(**form.cleaned_data, by=request.user.get_username())
            self.message_user(
                request,
                f"Sync queued (task {task_id}). Its result appears here when the worker has run it.",
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
