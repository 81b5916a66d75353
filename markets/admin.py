"""The holidays in the admin: the exchanges publish next year's list in December; enter it
here (or correct a day) and every process's calendar follows within seconds."""

from __future__ import annotations

from django.contrib import admin

from markets.models import MarketHoliday


@admin.register(MarketHoliday)
class MarketHolidayAdmin(admin.ModelAdmin):
    list_display = ("day", "weekday", "segment", "description", "session", "opens_at", "closes_at", "source")
    list_filter = ("segment", "session", ("day", admin.DateFieldListFilter))
    search_fields = ("description", "source")
    date_hierarchy = "day"
    ordering = ("-day", "segment")
    fields = ("segment", "day", "description", "session", ("opens_at", "closes_at"), "source")

    @admin.display(description="Day of week")
    def weekday(self, obj: MarketHoliday) -> str:
        return f"{obj.day:%a}"
