from django.core.management.base import BaseCommand, CommandError

from tradingportal.schedules import schedules_register


class Command(BaseCommand):
    help = (
        "Create or correct the portal's django-q2 schedules by name (idempotent; every `migrate` "
        "does this too). Prints each schedule with created, updated or unchanged."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Say what would be created or updated; change nothing."
        )

    def handle(self, *args, **options):
        dry_run = options["dry_run"]
        try:
            outcome = schedules_register(dry_run=dry_run)
        except ValueError as invalid:  # a schedule setting such as SYNC_DAILY_AT=25:00
            raise CommandError(str(invalid)) from None
        prefix = "would be " if dry_run else ""
        for name, result in outcome.items():
            self.stdout.write(f"{name}: {prefix if result != 'unchanged' else ''}{result}")
        changed = sum(result != "unchanged" for result in outcome.values())
        summary = f"{len(outcome)} schedules, {changed} {'to change' if dry_run else 'changed'}"
        self.stdout.write(summary + (" (dry run: nothing written)" if dry_run else ""))
