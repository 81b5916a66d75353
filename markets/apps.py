from django.apps import AppConfig


class MarketsConfig(AppConfig):
    name = "markets"
    verbose_name = "Market calendar"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from markets.calendar import calendar_forget
        from markets.models import MarketHoliday

        # An edit in the admin reaches this process's calendar at once (the others refresh
        # within MARKET_CALENDAR_REFRESH_SECONDS).
        post_save.connect(calendar_forget, sender=MarketHoliday, dispatch_uid="markets-holiday-saved")
        post_delete.connect(calendar_forget, sender=MarketHoliday, dispatch_uid="markets-holiday-deleted")
