"""ASGI lifespan: start and stop background services that live in the web process.

Only one-command mode on the embedded defaults uses this (``INGESTION_IN_PROCESS=1``):
the in-memory channel layer reaches only its own process, so the feed must run here
to reach the browsers connected here. With Redis, ``run_ingestion`` is its own process.

The in-process ingestion is supervised: if it ends (an error, or returning while the
web process runs), that is logged (``RepeatedFailure``: one traceback, then a count at
most once a minute) and it is started again with backoff, as the runner restarts a
``run_ingestion`` process. Meanwhile its heartbeat goes stale, so ``/healthz`` and the
dashboard show the feed as not running.
"""

import asyncio
import contextlib
import logging
import time
from typing import Any

from django.conf import settings

from tradingportal.logging import RepeatedFailure

logger = logging.getLogger(__name__)

RESTART_MIN, RESTART_MAX = 1.0, 30.0
# An ingestion that ran this long before ending starts its backoff over.
RESTART_HEALTHY = 60.0


class LifespanApp:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self.restarts = 0

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
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._supervise(self._stop), name="ingestion")
        self._task.add_done_callback(self._supervisor_done)
        logger.info("ingestion started inside the web process")

    async def _supervise(self, stop: asyncio.Event) -> None:
        failure = RepeatedFailure(logger, "the in-process ingestion")
        delay = RESTART_MIN
        while not stop.is_set():
            started = time.monotonic()
            try:
                from ingestion.engine import ingestion_run

                await ingestion_run(stop=stop)
            except Exception as exc:  # noqa: BLE001 - logged, counted, restarted
                failure.failed(exc)
            else:
                if stop.is_set():
                    return
                failure.failed(RuntimeError("the ingestion ended while the web process runs"))
            if time.monotonic() - started > RESTART_HEALTHY:
                delay = RESTART_MIN
            self.restarts += 1
            logger.warning("restarting the in-process ingestion in %.0fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, RESTART_MAX)

    def _supervisor_done(self, task: "asyncio.Task[None]") -> None:
        if task.cancelled() or (self._stop is not None and self._stop.is_set()):
            return
        # Only a BaseException gets here (the supervisor catches the rest): say so loudly.
        logger.critical("the in-process ingestion supervisor ended: no live data until restart",
                        exc_info=task.exception())  # fmt: skip

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
