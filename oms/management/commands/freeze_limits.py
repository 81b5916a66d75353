import json

from django.core.management.base import BaseCommand, CommandError

from oms.freeze_limits import (
    EXIT_CODES,
    FREEZE_EXCHANGES,
    FreezeLimitsError,
    FreezeReport,
    freeze_limits_update,
)

CHANGES_SHOWN = 20
EXIT_HELP = "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))


class Command(BaseCommand):
    help = (
        "Update the freeze quantities (admin → Order management → Freeze limits) from NSE's file: the CSV form "
        "of qtyfreeze.xls (columns SYMBOL and VOL_FRZ_QTY, in units), from a file or a URL, gzipped or not. "
        "One transaction; rows the file does not name are kept. The .xls itself cannot be read (it needs the "
        f"xlrd package): save it as CSV. Exit codes: {EXIT_HELP}."
    )

    def add_arguments(self, parser):
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--file", metavar="PATH", help="Read the freeze file (CSV) from a file.")
        where.add_argument("--url", metavar="URL", help="Download the freeze file (CSV).")
        parser.add_argument(
            "--exchange",
            choices=sorted(FREEZE_EXCHANGES),
            default="NFO",
            help="The exchange the file's quantities are for (default NFO: NSE's F&O; BFO for BSE's).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON (for machines).")

    def handle(self, *args, **options):
        try:
            report = freeze_limits_update(
                exchange=options["exchange"],
                path=options["file"],
                url=options["url"],
                dry_run=options["dry_run"],
            )
        except FreezeLimitsError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        elif options["verbosity"] > 0:
            self._summary(report, every_change=options["verbosity"] > 1)

    def _summary(self, report: FreezeReport, *, every_change: bool) -> None:
        write = self.stdout.write
        title = f"freeze limits {report.exchange} from {report.input}"
        write(self.style.SUCCESS(title))
        if report.dry_run:
            write("dry run: nothing was written")
        write(
            f"rows read {report.rows_read}: inserted {report.inserted}, updated {report.updated}, unchanged "
            f"{report.unchanged}, rejected {report.rejected}; in the table but not in the file (kept) "
            f"{report.not_in_file}"
        )
        shown = report.changes if every_change else report.changes[:CHANGES_SHOWN]
        for change in shown:
            old = "new" if change["old"] is None else change["old"]
            write(f"  {change['underlying']:<20} {old!s:>8} -> {change['new']}")
        if len(shown) < len(report.changes):
            write(f"  ... and {len(report.changes) - len(shown)} more (-v 2 lists them all)")
        if report.rejects:
            shown = report.rejects[:10]
            write(self.style.WARNING(f"rejected rows (first {len(shown)} of {report.rejected}):"))
            for reject in shown:
                write(f"  line {reject['line']}: {reject['reason']}")
