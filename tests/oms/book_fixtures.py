"""The fake Kite and the LIVE strategy the poll and reconciliation tests share: the portal
configured for a fake Kite REST server reached through KITE_API_URL (tests/fakes/kite_rest.py),
with the bootstrap token in KITE_ACCESS_TOKEN. Imported by test_poll.py, test_reconciliation.py
and test_reconciliation_admin.py."""

from decimal import Decimal as D

import pytest

from oms.brokers.kite import kite_order_rate_reset
from oms.models import Strategy
from tests.factories import InstrumentFactory
from tests.fakes.kite_rest import FakeKite


@pytest.fixture
def kite(settings):
    with FakeKite() as fake:
        settings.KITE_API_URL = fake.url
        settings.KITE_API_KEY = fake.api_key
        settings.KITE_ACCESS_TOKEN = fake.access_token
        settings.KITE_ACCESS_TOKEN_FILE = ""
        settings.KITE_REQUEST_TIMEOUT = 5.0
        kite_order_rate_reset()
        yield fake
        kite_order_rate_reset()


@pytest.fixture
def live(db):
    return Strategy.objects.create(name="live-desk", mode="LIVE", capital=D("1000000"))


@pytest.fixture
def infy(db):
    return InstrumentFactory(
        tradingsymbol="INFY", instrument_token=408065, exchange="NSE", tick_size=D("0.05")
    )
