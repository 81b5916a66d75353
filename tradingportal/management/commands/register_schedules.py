from django.core.management.base import BaseCommand

from tradingportal.schedules import schedules_register


class Command(BaseCommand):
    help = "Create or correct the portal's django-q2 schedules (idempotent; `migrate` does this too)."

    def handle(self, *args, **options):
        for name, outcome in schedules_register().items():
            self.stdout.write(f"{name}: {outcome}")
