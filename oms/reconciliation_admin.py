"""The admin of reconciliation with Kite: runs (read-only) and issues, which a person with the
permission to change them resolves on the issue's page (accept the broker's side, keep ours
with a note, or dismiss) through ``oms.reconciliation.reconciliation_issue_resolve``.
Everything else about an issue is read-only, a resolved issue entirely; nothing is added
or deleted by hand. Registered by ``oms.admin`` (its last line)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from oms.admin import ReadOnlyAdmin, UsableQueryMixin, _time_column
from oms.models import ReconciliationIssue, ReconciliationRun
from oms.reconciliation import ResolutionError, reconciliation_issue_check, reconciliation_issue_resolve

Resolution = ReconciliationIssue.Resolution
RESOLUTIONS = [
    (Resolution.ACCEPT_BROKER, "Accept Kite's side"),
    (Resolution.ACCEPT_OURS, "Keep ours (say why in the note)"),
    (Resolution.DISMISSED, "Dismiss"),
]


def _json(value: Any) -> str:
    return json.dumps(value or {}, sort_keys=True, indent=1)


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started",
        "finished",
        "status",
        "triggered_by",
        "found",
        "fixed",
        "issues_link",
        "error_shown",
    )
    list_filter = ("status", "triggered_by")
    date_hierarchy = "started_at"
    list_per_page = 100
    show_full_result_count = False
    fields = ("started", "finished", "status", "triggered_by", "counts_shown", "error")
    readonly_fields = fields

    started = _time_column("started_at", "started (IST)", ordering="started_at")
    finished = _time_column("finished_at", "finished (IST)", ordering="finished_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReconciliationRun]:
        return super().get_queryset(request).annotate(issue_count=Count("issues"))

    @admin.display(description="differences")
    def found(self, run: ReconciliationRun) -> str:
        counts = run.counts or {}
        if "differences" not in counts:
            return "-"
        waiting = counts.get("unconfirmed", 0)
        return f"{counts['differences']}" + (f" ({waiting} unconfirmed)" if waiting else "")

    @admin.display(description="fixed")
    def fixed(self, run: ReconciliationRun) -> str:
        counts = run.counts or {}
        if "fixed_statuses" not in counts:
            return "-"
        return f"{counts['fixed_statuses']} statuses, {counts['fixed_fills']} fills"

    @admin.display(description="issues recorded", ordering="issue_count")
    def issues_link(self, run: ReconciliationRun) -> str:
        count = getattr(run, "issue_count", 0)
        if not count:
            return "0"
        url = reverse("admin:oms_reconciliationissue_changelist") + f"?run__id__exact={run.pk}"
        return format_html('<a href="{}">{}</a>', url, count)

    @admin.display(description="error")
    def error_shown(self, run: ReconciliationRun) -> str:
        return run.error[:120]

    @admin.display(description="counts")
    def counts_shown(self, run: ReconciliationRun) -> str:
        return format_html("<pre>{}</pre>", _json(run.counts))


class IssueResolveForm(forms.ModelForm):
    """The resolution of an open issue; checked before anything is written."""

    resolution = forms.ChoiceField(choices=RESOLUTIONS, widget=forms.RadioSelect)
    note = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Why (needed to keep ours). Kept on the issue and the order's audit trail.",
    )  # fmt: skip

    class Meta:
        model = ReconciliationIssue
        fields = ("resolution", "note")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "resolution" in data:
            problem = reconciliation_issue_check(
                issue=self.instance, resolution=data["resolution"], note=data.get("note", "")
            )
            if problem:
                raise forms.ValidationError(problem)
        return data


class StillFoundFilter(admin.SimpleListFilter):
    title = "still found"
    parameter_name = "still_found"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "By the last run"), ("no", "Not any more")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        last = _last_run_start()
        if self.value() == "yes" and last is not None:
            return queryset.filter(seen_at__gte=last)
        if self.value() == "no" and last is not None:
            return queryset.filter(seen_at__lt=last)
        return queryset


def _last_run_start() -> Any:
    return (
        ReconciliationRun.objects.filter(status=ReconciliationRun.Status.OK)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )


@admin.register(ReconciliationIssue)
class ReconciliationIssueAdmin(UsableQueryMixin, admin.ModelAdmin):
    form = IssueResolveForm
    list_display = ("id", "created", "kind", "instrument_shown", "order_link", "strategy", "summary",
                    "still_found", "resolution_shown")  # fmt: skip
    list_display_links = ("id", "kind")
    list_filter = ("resolved", "kind", StillFoundFilter, "resolution", "strategy")
    search_fields = ("tradingsymbol", "=order__id", "=order__broker_order_id", "fingerprint")
    list_select_related = ("order", "strategy", "resolved_by")
    list_per_page = 100
    show_full_result_count = False
    actions = ["dismiss_selected"]
    shown = ("kind", "created", "seen", "run_link", "instrument_shown", "order_link", "strategy",
             "ours_shown", "broker_shown", "fingerprint")  # fmt: skip
    resolved_fields = ("resolution", "note", "resolved_by", "resolved_at")

    created = _time_column("created_at", "found (IST)", ordering="created_at")
    seen = _time_column("seen_at", "last found (IST)", ordering="seen_at")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._last_run = _last_run_start()  # once per page, for the "still found" column
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and (obj is None or not obj.resolved)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is not None and not obj.resolved and self.has_change_permission(request, obj):
            return (*self.shown, "resolution", "note")
        return (*self.shown, *self.resolved_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is not None and not obj.resolved and self.has_change_permission(request, obj):
            return self.shown
        return (*self.shown, *self.resolved_fields)

    def save_model(self, request: HttpRequest, obj: ReconciliationIssue, form: Any, change: bool) -> None:
        """The resolution goes through the service (never ``obj.save()``)."""
        try:
            resolved = reconciliation_issue_resolve(
                issue_id=obj.pk, resolution=form.cleaned_data["resolution"], note=form.cleaned_data["note"],
                by=request.user,
            )  # fmt: skip
        except ResolutionError as exc:
            request._reconciliation_refused = str(exc)  # type: ignore[attr-defined]
            return
        obj.refresh_from_db()
        self.message_user(
            request, f"Issue {resolved.pk} ({resolved.kind}): {resolved.get_resolution_display()}."
        )

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_reconciliation_refused", None):
            return None
        return super().log_change(request, obj, message)

    def response_change(self, request: HttpRequest, obj: ReconciliationIssue) -> HttpResponse:
        refused = getattr(request, "_reconciliation_refused", None)
        if refused:
            self.message_user(request, f"Not resolved: {refused}", messages.ERROR)
            return HttpResponseRedirect(request.path)
        return HttpResponseRedirect(reverse("admin:oms_reconciliationissue_changelist"))

    @admin.action(permissions=["change"], description="Dismiss the selected open issues")
    def dismiss_selected(self, request: HttpRequest, queryset: QuerySet[ReconciliationIssue]) -> None:
        dismissed = 0
        for issue_id in queryset.filter(resolved=False).values_list("pk", flat=True):
            try:
                reconciliation_issue_resolve(issue_id=issue_id, resolution=Resolution.DISMISSED,
                                             note="dismissed from the list", by=request.user)  # fmt: skip
            except ResolutionError:
                continue  # resolved meanwhile
            dismissed += 1
        self.message_user(request, f"{dismissed} issue{'s' if dismissed != 1 else ''} dismissed.")

    @admin.display(description="instrument", ordering="tradingsymbol")
    def instrument_shown(self, issue: ReconciliationIssue) -> str:
        return f"{issue.exchange}:{issue.tradingsymbol}" if issue.tradingsymbol else "-"

    @admin.display(description="order", ordering="order_id")
    def order_link(self, issue: ReconciliationIssue) -> str:
        if not issue.order_id:
            return "-"
        url = reverse("admin:oms_order_change", args=[issue.order_id])
        return format_html('<a href="{}">#{}</a>', url, issue.order_id)

    @admin.display(description="run")
    def run_link(self, issue: ReconciliationIssue) -> str:
        url = reverse("admin:oms_reconciliationrun_change", args=[issue.run_id])
        return format_html('<a href="{}">{}</a>', url, issue.run_id)

    @admin.display(description="ours / Kite's")
    def summary(self, issue: ReconciliationIssue) -> str:
        ours, theirs = issue.ours or {}, issue.broker or {}
        if issue.kind.startswith("fill_"):
            trade = ours.get("trade") or {}
            mine = f"{trade['quantity']} @ {trade['price']}" if trade else "-"
            return f"{mine} / {theirs.get('quantity')} @ {theirs.get('price')}"
        if issue.kind.startswith("position_"):
            averages = ", ".join(ours.get("averages") or []) or "-"
            return (
                f"{ours.get('quantity', 0)} @ {averages} / {theirs.get('quantity', 0)} @ "
                f"{theirs.get('average_price') or '-'}"
            )
        mine = f"{ours['status']} {ours['filled_quantity']}/{ours['quantity']}" if ours else "-"
        kite = f"{theirs.get('status')} {theirs.get('filled_quantity')}" if theirs.get("status") else "-"
        return f"{mine} / {kite}"

    @admin.display(description="still found", boolean=True)
    def still_found(self, issue: ReconciliationIssue) -> bool | None:
        last = getattr(self, "_last_run", None)
        return None if last is None else issue.seen_at >= last

    @admin.display(description="resolution", ordering="resolution")
    def resolution_shown(self, issue: ReconciliationIssue) -> str:
        if not issue.resolved:
            return "open"
        by = issue.resolved_by.get_username() if issue.resolved_by_id and issue.resolved_by else ""
        return f"{issue.get_resolution_display()}" + (f" ({by})" if by else "")

    @admin.display(description="ours")
    def ours_shown(self, issue: ReconciliationIssue) -> str:
        return format_html("<pre>{}</pre>", _json(issue.ours))

    @admin.display(description="Kite's")
    def broker_shown(self, issue: ReconciliationIssue) -> str:
        return format_html("<pre>{}</pre>", _json(issue.broker))
