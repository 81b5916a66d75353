from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_manual_strategy(sender, using="default", **kwargs):
    """The built-in ``manual`` strategy (PAPER) exists after every migrate (and flush)."""
    from oms.models import Mode, Strategy

    Strategy.objects.using(using).get_or_create(
        name="manual", defaults={"mode": Mode.PAPER, "description": "Orders placed by hand (API or admin)."}
    )


class OmsConfig(AppConfig):
    name = "oms"
    verbose_name = "Order management"

    def ready(self) -> None:
        post_migrate.connect(_ensure_manual_strategy, sender=self, dispatch_uid="oms.manual_strategy")
