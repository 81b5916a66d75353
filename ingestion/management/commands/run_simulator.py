import asyncio
import signal

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand

from ingestion.feed.simulator import KiteSimulator
from ingestion.simulator_seeds import simulator_seeds


class Command(BaseCommand):
    help = (
        "Run the built-in Kite ticker simulator on its own, on loopback (point KITE_TICKER_URL at it). "
        "Prices start from each instrument's last known price (the latest stored tick, else the dump's); "
        "futures and options are priced off their underlying."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8765, help="Port on 127.0.0.1 (default 8765).")
        parser.add_argument("--api-key", default="", help="Accept only this api_key (default: any).")
        parser.add_argument(
            "--access-token", default="", help="Accept only this access_token (default: any)."
        )
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds between ticks of an instrument."
        )
        parser.add_argument("--stamp-send-time", action="store_true", help=(
            "Benchmarks only: put the send time (ms) into oi_day_low of full packets."))  # fmt: skip

    def handle(self, *args, **options):
        asyncio.run(self._run(options))

    async def _run(self, options) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        simulator = await KiteSimulator(
            port=options["port"], api_key=options["api_key"], access_token=options["access_token"],
            interval=options["interval"], price_lookup=sync_to_async(simulator_seeds, thread_sensitive=True),
            stamp_send_time=options["stamp_send_time"],
        ).start()  # fmt: skip
        self.stdout.write(f"Kite simulator listening on {simulator.url}", ending="\n")
        self.stdout.flush()
        await stop.wait()
        await simulator.stop()
