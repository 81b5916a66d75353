"""ASGI entry point: Django for HTTP, Channels for ``/ws/...``, and a lifespan hook.

The Django app is built before anything imports models or consumers (Channels'
documented order). Websocket handshakes must come from the portal's own origin
(scheme, host and port) or ``CSRF_TRUSTED_ORIGINS``, as Django's CSRF check demands of
forms (``ingestion/origin.py``). The lifespan hook lets one-command mode run the
ingestion inside the web process when the channel layer is in-memory and so reaches
only this process.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tradingportal.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from ingestion.origin import OriginValidator  # noqa: E402
from ingestion.routing import websocket_urlpatterns  # noqa: E402
from tradingportal.lifespan import LifespanApp  # noqa: E402

application = LifespanApp(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": OriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
