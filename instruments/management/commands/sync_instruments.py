import json
import sys

from django.core.management.base import BaseCommand, CommandError

from instruments.presets import PRESET_CHOICES
from instruments.services import SyncReport, instrument_sync
from instruments.sync.errors import EXIT_CODES, SyncError
from instruments.sync.sources import Progress

EXIT_HELP = "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))


class Command(BaseCommand):
    help = (
        "Bring the instrument master in line with a broker dump (Kite CSV, Upstox JSON/CSV; file or URL, "
        "gzip or not). One transaction: a failure changes nothing. Instruments missing from the dump's "
        f"exchanges are delisted, never deleted. Exit codes: {EXIT_HELP}."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--source", choices=["kite", "upstox"], default="kite", help="Dump format (default kite)."
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument("--file", metavar="PATH", help="Read the dump from a file.")
        where.add_argument(
            "--url",
            metavar="URL",
            help="Download the dump (default: KITE_INSTRUMENTS_URL or UPSTOX_INSTRUMENTS_URL).",
        )
        parser.add_argument(
            "--filter",
            choices=PRESET_CHOICES,
            help="Make the active set exactly this preset (nifty: NIFTY 50 + NIFTY futures/options; banknifty: "
            "NIFTY BANK + BANKNIFTY futures/options); 'all' or no filter leaves active flags alone.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Accept a dump far smaller than the last good one in its scope.",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON (for machines).")

    def handle(self, *args, **options):
        self._bar = options["verbosity"] > 0 and not options["json"] and sys.stderr.isatty()
        self._plain_progress = options["verbosity"] > 1 and not options["json"]
        try:
            report = instrument_sync(
                source=options["source"],
                path=options["file"],
                url=options["url"],
                preset=options["filter"],
                dry_run=options["dry_run"],
                force=options["force"],
                triggered_by="command",
                on_progress=self._progress if (self._bar or self._plain_progress) else None,
            )
        except SyncError as exc:
            self._end_progress()
            failed = getattr(exc, "report", None)
            if options["json"] and failed is not None:
                self.stdout.write(json.dumps(failed.as_dict(), default=str, indent=2))
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        self._end_progress()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), default=str, indent=2))
        elif options["verbosity"] > 0:
            self._summary(report)

    # --- output -------------------------------------------------------------------------

    def _progress(self, progress: Progress, rows: int) -> None:
        if self._bar:
            if progress.total:
                done = min(1.0, progress.read / progress.total)
                filled = int(done * 30)
                line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:6.1%} {rows:>9,} rows"
            else:
                line = f"\r{progress.read / 1e6:8.1f} MB {rows:>9,} rows"
            sys.stderr.write(line)
            sys.stderr.flush()
        else:
            self.stdout.write(f"read {rows} rows ({progress.read} bytes)")

    def _end_progress(self) -> None:
        if getattr(self, "_bar", False):
            sys.stderr.write("\n")

    def _summary(self, report: SyncReport) -> None:
        write = self.stdout.write
        title = f"{report.source} sync #{report.run_id}: {report.status} in {report.elapsed_seconds:.1f}s"
        write(self.style.SUCCESS(title) if report.status == "ok" else self.style.WARNING(title))
        if report.dry_run:
            write("dry run: nothing was written")
        write(f"input: {report.input}")
        write(f"scope: {', '.join(report.scope)}")
        write(
            f"rows read {report.rows_read}: inserted {report.inserted}, updated {report.updated}, "
            f"unchanged {report.unchanged}, delisted {report.delisted}, relisted {report.relisted}, "
            f"rejected {report.rejected}"
        )
        if report.activated or report.deactivated:
            write(f"active flags: {report.activated} activated, {report.deactivated} deactivated")
        keys = sorted(set(report.before) | set(report.after))
        if keys:
            write(f"{'exchange/segment':<22} {'before':>9} {'after':>9} {'active':>7}")
            for key in keys:
                before = report.before.get(key, {}).get("listed", 0)
                after = report.after.get(key, {})
                write(f"{key:<22} {before:>9} {after.get('listed', 0):>9} {after.get('active', 0):>7}")
        if report.rejects:
            shown = report.rejects[:10]
            write(self.style.WARNING(f"rejected rows (first {len(shown)} of {report.rejected}):"))
            for reject in shown:
                write(f"  line {reject['line']}: {reject['reason']}")
