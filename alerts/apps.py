from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from django.conf import settings

        from tradingportal.security import secret_register

        # Masked in every log line and error report from the start, in every process.
        secret_register(getattr(settings, "TELEGRAM_BOT_TOKEN", ""))
        secret_register(getattr(settings, "EMAIL_HOST_PASSWORD", ""))
