from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ingestion.views import LatestTicksView, dashboard
from tradingportal import views
from tradingportal.metrics.views import metrics

admin.site.site_header = "Kite Trading Desk"
admin.site.site_title = "Kite Trading Desk"
admin.site.index_title = "Operations"

# Swagger UI with its start-up script served from this same URL (``?script``) instead of
# inline, so it runs under ``script-src 'self'``; a page for people, so anonymous visitors
# are sent to log in (the schema itself answers API clients 401).
api_docs = login_required(
    SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api/swagger_ui.html")
)

urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("favicon.ico", RedirectView.as_view(url=static("tradingportal/favicon.ico")), name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("kite/", include("kitesession.urls")),
    path("api/ticks/latest/", LatestTicksView.as_view(), name="ticks-latest"),
    path("api/", include("oms.api.urls")),
    path("api/", include("instruments.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", api_docs, name="api-docs"),
]
