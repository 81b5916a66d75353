from django.apps import AppConfig


class KiteSessionConfig(AppConfig):
    name = "kitesession"
    verbose_name = "Kite session"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        from tradingportal.security import secret_register

        # The key that decrypts stored access tokens: masked in every log line from the start.
        secret_register(getattr(settings, "KITE_TOKEN_KEY", ""))
