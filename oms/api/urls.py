from django.urls import path
from rest_framework.routers import SimpleRouter

from oms.api.reconciliation import ReconciliationIssueList, ReconciliationRunList
from oms.api.stats import DailyStatsView
from oms.api.views import KillSwitchView, OrderViewSet, PnlView, PositionsView, PostbackView, TradeViewSet

router = SimpleRouter(trailing_slash=True)
router.register("orders", OrderViewSet, basename="order")
router.register("trades", TradeViewSet, basename="trade")

urlpatterns = [
    *router.urls,
    path("positions/", PositionsView.as_view(), name="positions"),
    path("pnl/", PnlView.as_view(), name="pnl"),
    path("kill-switch/", KillSwitchView.as_view(), name="kill-switch"),
    path("kite/postback/", PostbackView.as_view(), name="kite-postback"),
    path("reconciliation/runs/", ReconciliationRunList.as_view(), name="reconciliation-runs"),
    path("reconciliation/issues/", ReconciliationIssueList.as_view(), name="reconciliation-issues"),
    path("stats/daily/", DailyStatsView.as_view(), name="stats-daily"),
]
