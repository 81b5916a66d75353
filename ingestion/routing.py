from django.urls import path

from ingestion.consumers import TicksConsumer

websocket_urlpatterns = [path("ws/ticks/", TicksConsumer.as_asgi())]
