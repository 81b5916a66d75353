from datetime import date
from decimal import Decimal

import factory
from django.utils import timezone

from instruments.models import Instrument


class InstrumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Instrument

    source = "kite"
    instrument_token = factory.Sequence(lambda n: 1_000_000 + n * 256 + 1)
    exchange_token = factory.Sequence(lambda n: 10_000 + n)
    tradingsymbol = factory.Sequence(lambda n: f"SYM{n}")
    name = factory.LazyAttribute(lambda o: o.tradingsymbol)
    last_price = Decimal("100.5")
    expiry = None
    strike = Decimal(0)
    tick_size = Decimal("0.05")
    lot_size = 1
    instrument_type = "EQ"
    segment = "NSE"
    exchange = "NSE"
    first_seen_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)


class NiftyOptionFactory(InstrumentFactory):
    name = "NIFTY"
    tradingsymbol = factory.Sequence(lambda n: f"NIFTY99DEC{20000 + n * 50}CE")
    instrument_type = "CE"
    segment = "NFO-OPT"
    exchange = "NFO"
    expiry = date(2099, 12, 31)
    strike = factory.Sequence(lambda n: Decimal(20000 + n * 50))
    lot_size = 75
