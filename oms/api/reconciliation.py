"""``GET /api/reconciliation/runs/`` and ``GET /api/reconciliation/issues/``: what
reconciliation with Kite compared, found and fixed (``oms.reconciliation``). Read-only;
staff, or a user with the permission to view runs (issues) in the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request

from oms.api.views import OmsPagination
from oms.models import ReconciliationIssue, ReconciliationRun
from oms.reconciliation import KINDS

BOOLEANS = {"true": True, "false": False}


class _CanRead(permissions.BasePermission):
    codename = ""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.is_staff or user.has_perm(self.codename)))


class CanReadRuns(_CanRead):
    codename = "oms.view_reconciliationrun"
    message = "Reconciliation runs are for staff, or users with the permission to view them."


class CanReadIssues(_CanRead):
    codename = "oms.view_reconciliationissue"
    message = "Reconciliation issues are for staff, or users with the permission to view them."


class ReconciliationRunSerializer(serializers.ModelSerializer):
    # Text, not an enum: the schema's enum for fields named "status" is the orders'.
    status = serializers.CharField(read_only=True, help_text="running, ok, unreachable (Kite) or failed.")
    counts = serializers.SerializerMethodField(help_text="What was compared, fixed and found.")
    issues = serializers.IntegerField(source="issue_count", read_only=True, help_text="Issues it recorded.")

    class Meta:
        model = ReconciliationRun
        fields = ("id", "started_at", "finished_at", "status", "triggered_by", "counts", "issues", "error")
        read_only_fields = fields

    def get_counts(self, run: ReconciliationRun) -> dict[str, Any]:
        return {key: value for key, value in (run.counts or {}).items() if key != "found"}


class ReconciliationIssueSerializer(serializers.ModelSerializer):
    ours = serializers.JSONField(read_only=True, help_text="Our side (decimals as strings, times in IST).")
    broker = serializers.JSONField(read_only=True, help_text="Kite's side.")

    class Meta:
        model = ReconciliationIssue
        fields = ("id", "kind", "tradingsymbol", "exchange", "ours", "broker", "resolved", "created_at",
                  "seen_at", "order", "resolution", "note", "run")  # fmt: skip
        read_only_fields = fields


@extend_schema(responses={200: ReconciliationRunSerializer(many=True)})
class ReconciliationRunList(generics.ListAPIView):
    """Reconciliation runs, newest first: when, how it ended (ok, unreachable, failed), what it
    counted and how many issues it recorded."""

    serializer_class = ReconciliationRunSerializer
    permission_classes = [CanReadRuns]
    pagination_class = OmsPagination
    filterset_class = None

    def get_queryset(self) -> QuerySet[ReconciliationRun]:
        return ReconciliationRun.objects.annotate(issue_count=Count("issues")).order_by("-started_at", "-id")


def _flag(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name, "").strip().lower()
    if not raw:
        return None
    if raw not in BOOLEANS:
        raise ValidationError({name: f"{raw[:20]!r} is not true or false"})
    return BOOLEANS[raw]


@extend_schema(
    parameters=[
        OpenApiParameter(
            "resolved", bool, description="true: only resolved issues; false: only those waiting."
        ),
        OpenApiParameter("kind", str, description=f"Only this kind: {', '.join(KINDS)}."),
    ],
    responses={200: ReconciliationIssueSerializer(many=True)},
)
class ReconciliationIssueList(generics.ListAPIView):
    """Differences with Kite that wait for (or were resolved by) a person, newest first."""

    serializer_class = ReconciliationIssueSerializer
    permission_classes = [CanReadIssues]
    pagination_class = OmsPagination
    filterset_class = None

    def get_queryset(self) -> QuerySet[ReconciliationIssue]:
        issues = ReconciliationIssue.objects.order_by("-created_at", "-id")
        resolved = _flag(self.request, "resolved")
        if resolved is not None:
            issues = issues.filter(resolved=resolved)
        kind = self.request.query_params.get("kind", "").strip()
        if kind:
            if kind not in KINDS:
                raise ValidationError({"kind": f"unknown kind {kind[:40]!r}; one of: {', '.join(KINDS)}"})
            issues = issues.filter(kind=kind)
        return issues
