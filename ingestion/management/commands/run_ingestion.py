import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ingestion.credentials import kite_feed_configured
from ingestion.engine import ingestion_run
from tradingportal.security import url_for_display


class Command(BaseCommand):
    help = (
        "Hold the Kite ticker feed: subscribe to exactly the active instruments (following changes while "
        "running), publish coalesced ticks to the dashboards and the latest tick per instrument to the cache. "
        "Connects to KITE_TICKER_URL with KITE_API_KEY and the Kite session's token (a login at the portal, "
        "else KITE_ACCESS_TOKEN_FILE or KITE_ACCESS_TOKEN), reconnecting with a new one as soon as it is saved; "
        "--simulate uses the built-in simulator instead. SIGTERM or Ctrl-C stops it cleanly."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--simulate", action="store_true", help="Stream from the built-in Kite simulator."
        )
        parser.add_argument(
            "--simulator-port",
            type=int,
            default=0,
            help="Loopback port for the simulator (default: any free one).",
        )

    def handle(self, *args, **options):
        simulate = options["simulate"] or settings.INGESTION_SIMULATE
        if not simulate and not kite_feed_configured():
            raise CommandError(
                "No Kite credentials: set KITE_API_KEY and KITE_API_SECRET (to log in to Kite from the portal) "
                "or KITE_ACCESS_TOKEN (or KITE_ACCESS_TOKEN_FILE), or run with --simulate."
            )
        feed = "built-in simulator" if simulate else url_for_display(settings.KITE_TICKER_URL)
        self.stdout.write(f"ingestion: {feed}; Ctrl-C stops")
        asyncio.run(self._run(simulate=simulate, port=options["simulator_port"]))
        self.stdout.write("ingestion stopped")

    async def _run(self, *, simulate: bool, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await ingestion_run(stop=stop, simulate=simulate, simulator_port=port)
