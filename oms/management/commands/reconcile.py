import json

from django.core.management.base import BaseCommand, CommandError

from oms.models import ReconciliationRun
from oms.reconciliation import reconciliation_run
from tradingportal.locks import LockHeld

EXIT_CODES = {
    0: "it ran (whatever it found), or there was nothing to reconcile",
    1: "unexpected error",
    5: "another reconciliation is running (lock held)",
    6: "Kite could not be reached, or refused the access token (Kite login needed)",
}
EXIT_HELP = "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))


class Command(BaseCommand):
    help = (
        "Reconcile now: compare Kite's orders, trades and positions with ours for LIVE strategies, apply what "
        "Kite's books prove (a status or a fill we missed) and record the other differences as issues for a "
        f"person (admin -> Reconciliation issues). Exit codes: {EXIT_HELP}."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="Print the run's report as JSON (for machines)."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read Kite's books and report what a run would fix and record; write nothing.",
        )

    def handle(self, *args, **options):
        try:
            report = reconciliation_run(triggered_by="command", dry_run=options["dry_run"])
        except LockHeld:
            raise CommandError(
                "another reconciliation is running; try again in a moment", returncode=5
            ) from None
        except Exception as exc:  # noqa: BLE001 - the run is recorded as failed, with the reason
            raise CommandError(f"reconciliation failed: {type(exc).__name__}: {exc}", returncode=1) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self._summary(report)
        if report.status == ReconciliationRun.Status.UNREACHABLE:
            raise CommandError(report.message, returncode=6)

    def _summary(self, report) -> None:
        where = f"run {report.run.pk}: " if report.run else ""
        self.stdout.write(f"{where}{report.message}")
        for difference in report.differences:
            place = (
                f" {difference['exchange']}:{difference['tradingsymbol']}"
                if difference["tradingsymbol"]
                else ""
            )
            order = f" order {difference['order']}" if difference["order"] else ""
            issue = f" (issue {difference['issue']})" if difference["issue"] else ""
            self.stdout.write(f"  {difference['kind']}{place}{order}: {difference['recorded']}{issue}")
        for fix in report.fixes:
            self.stdout.write(f"  fixed order {fix['order']}: {fix['kind']} {fix['message']}".rstrip())
