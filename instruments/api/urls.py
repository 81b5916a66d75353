from rest_framework.routers import DefaultRouter

from instruments.api.views import InstrumentViewSet, PortalAPIRoot


class PortalRouter(DefaultRouter):
    APIRootView = PortalAPIRoot


router = PortalRouter(trailing_slash=True)
router.register("instruments", InstrumentViewSet, basename="instrument")
urlpatterns = router.urls
