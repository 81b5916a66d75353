import pytest

from tests.factories import InstrumentFactory


@pytest.fixture
def desk(django_user_model, settings):
    # Real processes use the product's hashers, not the tests' fast one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    user = django_user_model.objects.create_user(username="desk", password="desk-pass-123", is_staff=True)
    nifty = InstrumentFactory(instrument_token=256265, tradingsymbol="NIFTY 50", segment="INDICES", is_active=True,
                              stream_mode="full", last_price="24350.50", lot_size=0, tick_size="0")  # fmt: skip
    reliance = InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE", is_active=True,
                                 stream_mode="full", last_price="2400.55")  # fmt: skip
    idle = InstrumentFactory(instrument_token=779521, tradingsymbol="SBIN", is_active=False, last_price="800")
    return user, nifty, reliance, idle
