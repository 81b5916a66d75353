"""One-command mode: the ingestion inside the web process is supervised by the ASGI
lifespan hook, driven here through the lifespan protocol as uvicorn speaks it."""

import asyncio

import pytest
from django.test import override_settings

from ingestion.status import feed_status
from tests.factories import InstrumentFactory
from tests.helpers import eventually
from tests.ingestion.layers import FailsToStartOnceLayer
from tradingportal.lifespan import LifespanApp

pytestmark = pytest.mark.django_db(transaction=True)
FAILS_TO_START_ONCE = {"default": {"BACKEND": "tests.ingestion.layers.FailsToStartOnceLayer", "CONFIG": {}}}


async def lifespan(app):
    """Start ``app``'s lifespan; returns the inbox, what it sent, and the running task."""
    inbox: asyncio.Queue = asyncio.Queue()
    sent: list = []

    async def send(message):
        sent.append(message)

    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, send))
    await eventually(lambda: sent, what="startup answered")
    return inbox, sent, task


@override_settings(INGESTION_IN_PROCESS=True, INGESTION_SIMULATE=True, CHANNEL_LAYERS=FAILS_TO_START_ONCE,
                   INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=0.3)  # fmt: skip
def test_an_in_process_ingestion_that_dies_is_noticed_and_restarted(caplog):
    FailsToStartOnceLayer.attempts = 0
    InstrumentFactory(is_active=True)

    async def run():
        app = LifespanApp(app=None)
        inbox, sent, task = await lifespan(app)
        assert sent == [{"type": "lifespan.startup.complete"}]  # the web process serves meanwhile
        # Its first start fails (the channel layer is unreachable); it is started again.
        await eventually(
            lambda: (feed_status() or {}).get("state") == "connected", timeout=30, what="restarted"
        )
        assert app.restarts == 1 and FailsToStartOnceLayer.attempts == 2
        assert feed_status()["running"] and feed_status()["subscribed"] == 1
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 20)
        assert sent[-1] == {"type": "lifespan.shutdown.complete"}

    asyncio.run(run())
    assert "the in-process ingestion failed" in caplog.text
    assert feed_status()["state"] == "stopped"


@override_settings(INGESTION_IN_PROCESS=False)
def test_without_in_process_ingestion_the_lifespan_starts_nothing():
    async def run():
        app = LifespanApp(app=None)
        inbox, sent, task = await lifespan(app)
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 5)
        return app, sent

    app, sent = asyncio.run(run())
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert app._task is None and feed_status() is None
