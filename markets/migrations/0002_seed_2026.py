"""The 2026 holidays, as the exchanges published them (edit them in the admin).

Sources (the exchanges' circulars, read through their published summaries):
- NSE: Capital Market NSE/CMTR/71775 and F&O NSE/FAOP/71777 of 12 Dec 2025 (15 weekday
  holidays), and NSE/CMTR/72260, NSE/FAOP/72262 of 12 Jan 2026 (15 Jan 2026, municipal
  elections in Maharashtra; BSE closed its equity and derivatives segments the same day).
- CDS: NSE/CD/71962 of 23 Dec 2025 (NSE's 15 and four more) and NSE/CD/72233 (15 Jan 2026).
- MCX: MCX's 2026 list as reported on 30 Dec 2025 (CNBC Awaaz), matching BSE's commodity
  notice 20251215-5: morning (09:00-17:00) and evening (17:00-close) sessions per day.
  15 Jan 2026 (evening session only) is from BSE's commodity notice of 12 Jan 2026; MCX's
  own notice for that day was not seen.
Not seeded: holidays on a Saturday or Sunday (no session then anyway) and Muhurat trading
on Sunday 8 Nov 2026, whose timings the exchanges announce later (add it in the admin as
a special session).
"""

from django.db import migrations

NSE_CIRCULARS = "NSE/CMTR/71775, NSE/FAOP/71777"
NSE_2026 = [
    ("2026-01-15", "Municipal Corporation Election in Maharashtra", "NSE/CMTR/72260, NSE/FAOP/72262"),
    ("2026-01-26", "Republic Day", NSE_CIRCULARS),
    ("2026-03-03", "Holi", NSE_CIRCULARS),
    ("2026-03-26", "Shri Ram Navami", NSE_CIRCULARS),
    ("2026-03-31", "Shri Mahavir Jayanti", NSE_CIRCULARS),
    ("2026-04-03", "Good Friday", NSE_CIRCULARS),
    ("2026-04-14", "Dr. Baba Saheb Ambedkar Jayanti", NSE_CIRCULARS),
    ("2026-05-01", "Maharashtra Day", NSE_CIRCULARS),
    ("2026-05-28", "Bakri Id", NSE_CIRCULARS),
    ("2026-06-26", "Muharram", NSE_CIRCULARS),
    ("2026-09-14", "Ganesh Chaturthi", NSE_CIRCULARS),
    ("2026-10-02", "Mahatma Gandhi Jayanti", NSE_CIRCULARS),
    ("2026-10-20", "Dussehra", NSE_CIRCULARS),
    ("2026-11-10", "Diwali-Balipratipada", NSE_CIRCULARS),
    ("2026-11-24", "Prakash Gurpurb Sri Guru Nanak Dev", NSE_CIRCULARS),
    ("2026-12-25", "Christmas", NSE_CIRCULARS),
]
# The currency segment's holidays beyond NSE's list.
CDS_2026 = [
    ("2026-02-19", "Chhatrapati Shivaji Maharaj Jayanti", "NSE/CD/71962"),
    ("2026-03-19", "Gudi Padwa", "NSE/CD/71962"),
    ("2026-04-01", "Annual Bank Closing", "NSE/CD/71962"),
    ("2026-08-26", "Id-E-Milad", "NSE/CD/71962"),
]
MCX_SOURCE = "MCX 2026 holiday list (reported 30 Dec 2025); BSE commodity notice 20251215-5"
MCX_2026 = [
    ("2026-01-01", "New Year Day", "morning_only", MCX_SOURCE),
    ("2026-01-15", "Municipal Corporation Election in Maharashtra", "evening_only",
     "BSE commodity notice of 12 Jan 2026 (MCX's own not seen)"),
    ("2026-01-26", "Republic Day", "closed", MCX_SOURCE),
    ("2026-03-03", "Holi", "evening_only", MCX_SOURCE),
    ("2026-03-26", "Shri Ram Navami", "evening_only", MCX_SOURCE),
    ("2026-03-31", "Shri Mahavir Jayanti", "evening_only", MCX_SOURCE),
    ("2026-04-03", "Good Friday", "closed", MCX_SOURCE),
    ("2026-04-14", "Dr. Baba Saheb Ambedkar Jayanti", "evening_only", MCX_SOURCE),
    ("2026-05-01", "Maharashtra Day", "evening_only", MCX_SOURCE),
    ("2026-05-28", "Bakri Id", "evening_only", MCX_SOURCE),
    ("2026-06-26", "Muharram", "evening_only", MCX_SOURCE),
    ("2026-09-14", "Ganesh Chaturthi", "evening_only", MCX_SOURCE),
    ("2026-10-02", "Mahatma Gandhi Jayanti", "closed", MCX_SOURCE),
    ("2026-10-20", "Dussehra", "evening_only", MCX_SOURCE),
    ("2026-11-10", "Diwali-Balipratipada", "evening_only", MCX_SOURCE),
    ("2026-11-24", "Prakash Gurpurb Sri Guru Nanak Dev", "evening_only", MCX_SOURCE),
    ("2026-12-25", "Christmas", "closed", MCX_SOURCE),
]


def rows():
    yield from (("NSE", day, name, "closed", source) for day, name, source in NSE_2026)
    yield from (("CDS", day, name, "closed", source) for day, name, source in CDS_2026)
    yield from (("MCX", day, name, session, source) for day, name, session, source in MCX_2026)


def seed(apps, schema_editor):
    MarketHoliday = apps.get_model("markets", "MarketHoliday")
    for segment, day, description, session, source in rows():
        # A row an operator already entered for that day is left as it is.
        MarketHoliday.objects.get_or_create(
            segment=segment, day=day, defaults={"description": description, "session": session, "source": source}
        )


def unseed(apps, schema_editor):
    MarketHoliday = apps.get_model("markets", "MarketHoliday")
    for segment, day, description, session, source in rows():
        MarketHoliday.objects.filter(segment=segment, day=day, description=description, source=source).delete()


class Migration(migrations.Migration):
    dependencies = [("markets", "0001_holidays")]

    operations = [migrations.RunPython(seed, unseed)]
