"""The calendar's settings from the environment: defaults, overrides, and bad values that
stop the portal at start naming the variable."""

import json

import pytest

from tests.helpers import run_python
from tests.tradingportal.test_settings import clean_env

PROBE = """
import json, django
from django.conf import settings
django.setup()
names = ("MARKET_HOURS", "MARKET_MCX_CLOSE_US_WINTER", "MARKET_MCX_EVENING_OPENS", "MARKET_CALENDAR_REFRESH_SECONDS")
print(json.dumps({name: getattr(settings, name) for name in names}))
"""


def resolve(**values: str) -> dict:
    result = run_python(PROBE, clean_env(SECRET_KEY="x" * 50, **values))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_defaults_and_an_override_merged_over_them():
    defaults = resolve()
    assert defaults["MARKET_HOURS"] == {
        "NSE": "09:15-15:30", "BSE": "09:15-15:30", "NFO": "09:15-15:30", "BFO": "09:15-15:30",
        "CDS": "09:00-17:00", "BCD": "09:00-17:00", "MCX": "09:00-23:30",
    }  # fmt: skip
    assert (defaults["MARKET_MCX_CLOSE_US_WINTER"], defaults["MARKET_MCX_EVENING_OPENS"]) == (
        "23:55",
        "17:00",
    )
    assert defaults["MARKET_CALENDAR_REFRESH_SECONDS"] == 300
    given = resolve(MARKET_HOURS="mcx=10:00-23:00, CDS=09:00-16:00")
    assert given["MARKET_HOURS"]["MCX"] == "10:00-23:00" and given["MARKET_HOURS"]["CDS"] == "09:00-16:00"
    assert given["MARKET_HOURS"]["NSE"] == "09:15-15:30"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MARKET_HOURS", "MCX=23:30-09:00"),
        ("MARKET_HOURS", "MCX=9am-11pm"),
        ("MARKET_HOURS", "MCX"),
        ("MARKET_MCX_CLOSE_US_WINTER", "23:75"),
        ("MARKET_CALENDAR_REFRESH_SECONDS", "0"),
        ("ALERT_MARKET_HOURS", "09:15-15:30"),  # gone: the calendar decides; said, not ignored
    ],
)
def test_a_bad_value_stops_the_portal_naming_the_variable(name, value):
    result = run_python(PROBE, clean_env(SECRET_KEY="x" * 50, **{name: value}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr.splitlines()[-1]
