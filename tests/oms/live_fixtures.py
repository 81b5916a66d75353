"""Fixtures of the LIVE order tests: a fake Kite REST server the portal reaches through
KITE_API_URL (tests/fakes/kite_rest.py), a LIVE strategy and Kite-shaped instruments.
Imported by the tests/oms/test_live_*.py modules."""

from decimal import Decimal as D

import pytest

from oms.brokers.kite import kite_order_rate_reset
from oms.models import FreezeLimit, Strategy
from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.fakes.kite_rest import FakeKite

NIFTY_CE = "NIFTY99DEC24000CE"


@pytest.fixture
def kite(settings, tmp_path):
    """A fake Kite, and the portal configured for it (the token in a file, as the morning job writes it)."""
    with FakeKite() as fake:
        token_file = tmp_path / "kite-access-token"
        token_file.write_text(fake.access_token + "\n")
        settings.KITE_API_URL = fake.url
        settings.KITE_API_KEY = fake.api_key
        settings.KITE_API_SECRET = fake.api_secret
        settings.KITE_ACCESS_TOKEN = ""
        settings.KITE_ACCESS_TOKEN_FILE = str(token_file)
        settings.KITE_REQUEST_TIMEOUT = 2.0
        fake.prices["NSE:INFY"] = D("1500.05")
        fake.instrument_tokens["NSE:INFY"] = 408065
        fake.token_file = token_file
        kite_order_rate_reset()
        yield fake
        fake.release()
        kite_order_rate_reset()


def new_token(kite: FakeKite, token: str = "kite-test-token-2") -> str:
    """A new login's token, in the token file (a token Kite refused is never used again)."""
    kite.tokens.add(token)
    kite.token_file.write_text(token + "\n")
    return token


@pytest.fixture
def live(db):
    """A LIVE strategy (its mode set in the test's data, as a person with the permission would)."""
    return Strategy.objects.create(
        name="live-desk", mode="LIVE", capital=D("10000000"), algo_id="NSE-ALGO-4711"
    )


@pytest.fixture
def infy(db):
    return InstrumentFactory(tradingsymbol="INFY", name="INFOSYS", instrument_token=408065, exchange="NSE",
                             segment="NSE", tick_size=D("0.05"), lot_size=1, is_active=True)  # fmt: skip


@pytest.fixture
def nifty_ce(db):
    """A NIFTY option (lot 75) whose underlying's freeze quantity is 1800."""
    FreezeLimit.objects.update_or_create(
        exchange="NFO", underlying="NIFTY", defaults={"freeze_quantity": 1800, "source": "admin"}
    )
    return NiftyOptionFactory(tradingsymbol=NIFTY_CE, instrument_token=10189826, tick_size=D("0.05"), lot_size=75,
                              is_active=True)  # fmt: skip
