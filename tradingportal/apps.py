from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _register_schedules(sender, using="default", **kwargs):
    if sender.name != "django_q":  # once per migrate, after django-q2's tables exist
        return
    from django.db import connections

    if "django_q_schedule" not in connections[using].introspection.table_names():
        return
    from tradingportal.schedules import schedules_register

    schedules_register()


class TradingPortalConfig(AppConfig):
    name = "tradingportal"
    verbose_name = "Portal"

    def ready(self) -> None:
        post_migrate.connect(_register_schedules, dispatch_uid="tradingportal.schedules")
