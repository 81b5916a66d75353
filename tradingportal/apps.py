from django.apps import AppConfig


class TradingPortalConfig(AppConfig):
    name = "tradingportal"
    verbose_name = "Portal"
