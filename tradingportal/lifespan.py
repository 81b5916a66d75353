"""ASGI lifespan: start and stop background services that live in the web process.

Only one-command mode on the embedded defaults uses this (``INGESTION_IN_PROCESS=1``):
the in-memory channel layer reaches only its own process, so the feed must run here
to reach the browsers connected here. With Redis, ``run_ingestion`` is its own process.
"""

import asyncio
import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)


class LifespanApp:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server
                    logger.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _startup(self) -> None:
        if not getattr(settings, "INGESTION_IN_PROCESS", False):
            return
        from ingestion.engine import ingestion_run

        self._stop = asyncio.Event()
        self._task = asyncio.create_task(ingestion_run(stop=self._stop), name="ingestion")
        logger.info("ingestion started inside the web process")

    async def _shutdown(self) -> None:
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        except Exception:  # noqa: BLE001
            logger.exception("ingestion stopped with an error")
