"""Kite sessions in the admin: read-only (only the login and the store write them), never the
token (neither its ciphertext nor its fingerprint is shown)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone

from kitesession.models import KiteSession, RefusedToken
from kitesession.permissions import may_log_in_to_kite

SESSION_FIELDS = ("user_id", "user_name", "created_at", "created_by", "expires_at", "refused_at", "refused_detail",
                  "logged_out_at")  # fmt: skip


class _ReadOnly(admin.ModelAdmin):
    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(KiteSession)
class KiteSessionAdmin(_ReadOnly):
    list_display = ("created_at", "user_id", "user_name", "status", "expires_at", "created_by")
    list_filter = ("user_id",)
    search_fields = ("user_id", "user_name", "created_by")
    date_hierarchy = "created_at"
    fields = (*SESSION_FIELDS, "status")
    readonly_fields = fields

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        return super().changelist_view(
            request, {**(extra_context or {}), "may_log_in": may_log_in_to_kite(request.user)}
        )

    @admin.display(description="status")
    def status(self, session: KiteSession) -> str:
        if session.logged_out_at is not None:
            return "logged out"
        if session.refused_at is not None:
            return "refused by Kite"
        if session.expires_at <= timezone.now():
            return "expired"
        return "valid"


@admin.register(RefusedToken)
class RefusedTokenAdmin(_ReadOnly):
    list_display = ("refused_at", "source", "detail", "fingerprint")
    fields = ("refused_at", "source", "detail")
    readonly_fields = fields

    @admin.display(description="token fingerprint")
    def fingerprint(self, refusal: RefusedToken) -> str:
        return f"{refusal.token_fingerprint[:8]}…"
