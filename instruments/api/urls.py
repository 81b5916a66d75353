from rest_framework.routers import DefaultRouter

from instruments.api.views import InstrumentViewSet

router = DefaultRouter(trailing_slash=True)
router.register("instruments", InstrumentViewSet, basename="instrument")
urlpatterns = router.urls
