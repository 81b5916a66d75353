"""The exchanges' trading holidays: one row per calendar and day, edited in the admin.

A row's ``segment`` is the holiday list it belongs to: ``NSE`` (NSE's list: it applies to
NSE, BSE, NFO, BFO and the currency segments CDS and BCD), ``CDS`` (the currency segment's
own extra holidays, on top of NSE's) and ``MCX`` (its own list). ``session`` says what
trades that day: nothing (closed all day), only MCX's morning or evening session, or only
a special session (``opens_at``-``closes_at``: Muhurat trading on Diwali, on any day of the
week). ``markets.calendar`` reads them; nothing else should.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models


class Segment(models.TextChoices):
    NSE = "NSE", "NSE list (NSE, BSE, NFO, BFO, CDS, BCD)"
    CDS = "CDS", "Currency only (CDS, BCD): extra to NSE's list"
    MCX = "MCX", "MCX"


class Session(models.TextChoices):
    CLOSED = "closed", "closed all day"
    MORNING_ONLY = "morning_only", "morning session only (MCX)"
    EVENING_ONLY = "evening_only", "evening session only (MCX)"
    SPECIAL = "special", "special session only (opens at - closes at)"


class MarketHoliday(models.Model):
    segment = models.CharField(max_length=8, choices=Segment.choices, default=Segment.NSE)
    day = models.DateField(help_text="The trading day, in IST.")
    description = models.CharField(max_length=120, help_text="What the exchange calls the day, e.g. Holi.")
    session = models.CharField(max_length=16, choices=Session.choices, default=Session.CLOSED)
    opens_at = models.TimeField(null=True, blank=True, help_text="Special session only: its start (IST).")
    closes_at = models.TimeField(null=True, blank=True, help_text="Special session only: its end (IST).")
    source = models.CharField(max_length=200, blank=True, help_text="The circular or notice it comes from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("day", "segment")
        constraints = [
            models.UniqueConstraint(fields=("segment", "day"), name="markets_holiday_one_per_segment_day"),
        ]
        verbose_name = "market holiday"

    def __str__(self) -> str:
        return f"{self.segment} {self.day:%d %b %Y}: {self.description} ({self.get_session_display()})"

    def clean(self) -> None:
        super().clean()
        if self.session == Session.SPECIAL:
            if self.opens_at is None or self.closes_at is None or self.opens_at >= self.closes_at:
                raise ValidationError(
                    "A special session needs opens at and closes at, the start before the end."
                )
        elif self.opens_at is not None or self.closes_at is not None:
            raise ValidationError("Opens at and closes at are for a special session only; leave them empty.")
        if self.session in (Session.MORNING_ONLY, Session.EVENING_ONLY) and self.segment != Segment.MCX:
            raise ValidationError("Only MCX has morning and evening sessions; use closed or special.")
