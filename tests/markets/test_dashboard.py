"""The market status where people see it: the dashboard's line and the status frames."""

import asyncio
import html
import json
import re
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from ingestion import consumers
from markets.models import MarketHoliday

# Transactional: the status frame's calendar is read on asgiref's thread, another connection.
pytestmark = pytest.mark.django_db(transaction=True)
IST = ZoneInfo("Asia/Kolkata")


def today():
    return datetime.now(tz=IST).date()


def test_the_dashboard_says_market_closed_with_the_holiday(staff_client):
    MarketHoliday.objects.update_or_create(
        segment="NSE", day=today(), defaults={"description": "Exchange holiday"}
    )
    page = staff_client.get("/").content.decode()
    assert 'id="market-state"' in page
    assert "market closed: holiday (Exchange holiday) (NSE opens " in page
    # The status the page's script starts from, before any status frame (no ingestion running).
    found = re.search(r'data-market="([^"]+)"', page)
    sent = json.loads(html.unescape(found.group(1)))
    assert sent["exchanges"]["NSE"]["reason"] == "holiday" and sent["exchanges"]["MCX"]["exchange"] == "MCX"


def test_the_dashboard_says_market_open_during_a_session(staff_client):
    MarketHoliday.objects.update_or_create(segment="NSE", day=today(), defaults={
        "description": "All-day session", "session": "special", "opens_at": time(0), "closes_at": time(23, 59, 59),
    })  # fmt: skip
    page = staff_client.get("/").content.decode()
    assert "market open: NSE open until 23:59 IST (All-day session: special)" in page


def test_status_frames_carry_each_exchange_s_market_status():
    MarketHoliday.objects.update_or_create(
        segment="NSE", day=today(), defaults={"description": "Exchange holiday"}
    )
    consumers._market["at"] = -consumers.MARKET_EVERY_SECONDS  # not what an earlier test computed

    async def frame():
        try:
            return await consumers._with_market({"state": "connected", "reconnects": 0})
        finally:
            await sync_to_async(connections.close_all)()  # asgiref's thread: its connection too

    status = asyncio.run(frame())

    assert status["state"] == "connected" and set(status["market"]) == {"at", "exchanges"}
    nse = status["market"]["exchanges"]["NSE"]
    assert nse["open"] is False and nse["reason"] == "holiday" and nse["holiday"] == "Exchange holiday"
    assert status["market"]["exchanges"]["CDS"]["holiday"] == "Exchange holiday"  # NSE's list applies
    assert {"MCX", "NFO", "BSE", "BFO", "BCD"} <= set(status["market"]["exchanges"])
