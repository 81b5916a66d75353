"""Alerts in the admin: read-only (only ``alerts.services`` writes them), the outcome and
error per channel, filters by kind and outcome, and "Send again" behind its permission."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from alerts.models import Alert, Outcome
from alerts.services import alerts_resend
from oms.admin import ReadOnlyAdmin


def _any(outcome: str) -> Q:
    return Q(telegram_outcome=outcome) | Q(email_outcome=outcome)


class OutcomeFilter(admin.SimpleListFilter):
    """How the sending went, over both channels."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("failed", "Failed on a channel"),
            ("pending", "Not sent yet"),
            ("sent", "Sent"),
            ("skipped", "No channel configured"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "failed":
            return queryset.filter(_any(Outcome.FAILED))
        if value == "pending":
            return queryset.filter(_any(Outcome.PENDING))
        if value == "sent":
            return queryset.filter(_any(Outcome.SENT)).exclude(_any(Outcome.FAILED) | _any(Outcome.PENDING))
        if value == "skipped":
            return queryset.filter(telegram_outcome=Outcome.SKIPPED, email_outcome=Outcome.SKIPPED)
        return queryset


def _outcome(alert: Alert, channel: str) -> str:
    outcome = alert.outcome(channel)
    if outcome == Outcome.FAILED:
        return format_html('<strong title="{}">failed</strong>', getattr(alert, f"{channel}_error"))
    return outcome


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("raised", "kind", "severity", "subject", "repeats", "telegram", "email", "sent")
    list_display_links = ("raised", "subject")
    list_filter = ("kind", OutcomeFilter, "severity")
    search_fields = ("subject", "key")
    list_per_page = 100
    actions = ["send_again"]  # type: ignore[assignment]  # ReadOnlyAdmin has none
    fields = (
        "kind", "severity", "subject", "body", "link_shown", "key", "created_at", "last_raised_at", "repeats",
        "telegram_outcome", "telegram_error", "email_outcome", "email_error", "sent_at", "attempts",
        "attempted_at",
    )  # fmt: skip
    readonly_fields = fields

    @admin.display(description="raised (IST)", ordering="created_at")
    def raised(self, alert: Alert) -> str:
        return f"{timezone.localtime(alert.created_at):%d %b %H:%M:%S}"

    @admin.display(description="telegram", ordering="telegram_outcome")
    def telegram(self, alert: Alert) -> str:
        return _outcome(alert, "telegram")

    @admin.display(description="email", ordering="email_outcome")
    def email(self, alert: Alert) -> str:
        return _outcome(alert, "email")

    @admin.display(description="sent (IST)", ordering="sent_at")
    def sent(self, alert: Alert) -> str:
        return f"{timezone.localtime(alert.sent_at):%H:%M:%S}" if alert.sent_at else "-"

    @admin.display(description="link")
    def link_shown(self, alert: Alert) -> str:
        return format_html('<a href="{}">{}</a>', alert.link, alert.link) if alert.link else "-"

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerts.resend_alert")

    @admin.action(description="Send again (channels that did not deliver)", permissions=["resend"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        result = alerts_resend(ids=list(queryset.values_list("pk", flat=True)), by=request.user)
        if result.queued:
            self.message_user(request, f"{result.queued} alert(s) queued to send again.", messages.SUCCESS)
        if result.delivered:
            self.message_user(
                request, f"{result.delivered} alert(s) already sent on every channel.", messages.INFO
            )
        if result.busy:
            self.message_user(request, f"{result.busy} alert(s) are being sent right now.", messages.WARNING)
