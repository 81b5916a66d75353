"""Zerodha's charges against hand-computed contract notes, the table's overrides and refusals.

Rates are those of Zerodha's published schedule (``oms.charges.DEFAULT_SCHEDULE``): intraday
brokerage 0.03% or Rs 20 per executed order, options Rs 20 flat, delivery Rs 0; STT intraday
0.025% (sell), delivery 0.1% (both sides), futures 0.05% and options 0.15% (sell, on the
premium); NSE transaction charges 0.00307% (cash), 0.00183% (futures), 0.03553% (options),
IPFT included; SEBI Rs 10 per crore (0.0001%); stamp duty on the buy side 0.003% intraday,
0.015% delivery, 0.002% futures, 0.003% options; GST 18% of brokerage + exchange + SEBI.
STT and stamp duty round half up to the rupee, everything else to the paisa.
"""

import json
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given
from hypothesis import strategies as st

from oms.charges import (
    ChargeBreakdown,
    ChargesError,
    ScheduleError,
    charges_for_day,
    charges_for_trades,
    contract_notes,
    schedule_load,
)
from oms.models import Order, Strategy, Trade
from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.helpers import child_env, manage

IST = ZoneInfo("Asia/Kolkata")
MORNING = datetime(2026, 6, 1, 10, 0, tzinfo=IST)
ZERODHA = schedule_load()


@dataclass(frozen=True)
class Fill:
    order_id: int
    transaction_type: str
    quantity: int
    price: D
    tradingsymbol: str = "RELIANCE"
    exchange: str = "NSE"
    product: str = "MIS"
    filled_at: datetime = MORNING
    instrument_token: int = 0

    def __post_init__(self):
        if not self.instrument_token:
            object.__setattr__(self, "instrument_token", zlib.crc32(self.tradingsymbol.encode()))


def fill(order, side, quantity, price, **fields):
    return Fill(order_id=order, transaction_type=side, quantity=quantity, price=D(price), **fields)


def breakdown(*, brokerage, stt, exchange, sebi, stamp, gst, turnover, orders):
    return ChargeBreakdown(brokerage=D(brokerage), stt=D(stt), exchange=D(exchange), sebi=D(sebi),
                           stamp=D(stamp), gst=D(gst), turnover=D(turnover), orders=orders)  # fmt: skip


# --- contract notes worked by hand --------------------------------------------------------


def test_an_intraday_equity_round_trip_on_nse():
    trades = [
        fill(1, "BUY", 70, "2499.90"),  # one buy order filled in two trades
        fill(1, "BUY", 30, "2500.10"),
        fill(2, "SELL", 100, "2540.00"),
    ]
    # Buy value 70 x 2499.90 + 30 x 2500.10 = 174993.00 + 75003.00 = 249996.00; sell value 254000.00;
    # turnover 503996.00.
    # Brokerage per executed order: 0.03% x 249996 = 74.9988 -> capped at 20; 0.03% x 254000 = 76.20 -> 20.
    #   Total 40.00 (per fill it would be 20 + 20 + 20).
    # STT, netted per scrip: average price 503996 / 200 = 2519.98; intraday quantity min(100, 100) = 100;
    #   100 x 2519.98 x 0.025% = 62.9995 -> Rs 63 (on the sell value alone it would be 63.50 -> 64).
    # Exchange: 503996 x 0.00307% = 15.4726772 -> 15.47.  SEBI: 503996 x 0.0001% = 0.503996 -> 0.50.
    # Stamp: 249996 x 0.003% = 7.49988 -> Rs 7.
    # GST: 18% x (40.00 + 15.47 + 0.50) = 18% x 55.97 = 10.0746 -> 10.07.
    # Total 40 + 63 + 15.47 + 0.50 + 7 + 10.07 = 136.04.
    charges = charges_for_trades(trades, schedule=ZERODHA)
    assert charges == breakdown(brokerage="40.00", stt="63.00", exchange="15.47", sebi="0.50", stamp="7.00",
                                gst="10.07", turnover="503996.00", orders=2)  # fmt: skip
    assert charges.total == D("136.04")
    gross = D("254000.00") - D("249996.00")
    assert gross - charges.total == D("3867.96")  # the net P&L of the round trip
    assert charges.as_dict()["total"] == D("136.04") and charges.as_dict()["stt"] == D("63.00")


def test_an_options_round_trip_on_nfo():
    option = {"tradingsymbol": "NIFTY26JUN24000CE", "exchange": "NFO", "product": "NRML"}
    trades = [fill(1, "BUY", 130, "152.35", **option), fill(2, "SELL", 130, "171.80", **option)]
    # Premium bought 130 x 152.35 = 19805.50; sold 130 x 171.80 = 22334.00; turnover 42139.50.
    # Brokerage: Rs 20 flat per executed order: 40.00.
    # STT: 0.15% of the premium sold: 22334 x 0.15% = 33.501 -> Rs 34.
    # Exchange: 42139.50 x 0.03553% = 14.97216435 -> 14.97.  SEBI: 42139.50 x 0.0001% = 0.0421395 -> 0.04.
    # Stamp: 19805.50 x 0.003% = 0.594165 -> Rs 1.
    # GST: 18% x (40.00 + 14.97 + 0.04) = 18% x 55.01 = 9.9018 -> 9.90.
    # Total 40 + 34 + 14.97 + 0.04 + 1 + 9.90 = 99.91.
    charges = charges_for_trades(trades, schedule=ZERODHA)
    assert charges == breakdown(brokerage="40.00", stt="34.00", exchange="14.97", sebi="0.04", stamp="1.00",
                                gst="9.90", turnover="42139.50", orders=2)  # fmt: skip
    assert charges.total == D("99.91")


def test_a_futures_round_trip_on_nfo():
    future = {"tradingsymbol": "NIFTY26JUNFUT", "exchange": "NFO", "product": "NRML"}
    trades = [fill(1, "BUY", 65, "24000.00", **future), fill(2, "SELL", 65, "24100.00", **future)]
    # Bought 65 x 24000 = 1560000; sold 65 x 24100 = 1566500; turnover 3126500.
    # Brokerage: 0.03% x 1560000 = 468 -> 20, and 20 for the sell: 40.00.
    # STT: 0.05% x 1566500 = 783.25 -> Rs 783.
    # Exchange: 3126500 x 0.00183% = 57.21495 -> 57.21.  SEBI: 3126500 x 0.0001% = 3.1265 -> 3.13.
    # Stamp: 1560000 x 0.002% = 31.20 -> Rs 31.
    # GST: 18% x (40 + 57.21 + 3.13) = 18% x 100.34 = 18.0612 -> 18.06.  Total 932.40.
    charges = charges_for_trades(trades, schedule=ZERODHA)
    assert charges == breakdown(brokerage="40.00", stt="783.00", exchange="57.21", sebi="3.13", stamp="31.00",
                                gst="18.06", turnover="3126500.00", orders=2)  # fmt: skip
    assert charges.total == D("932.40")


def test_delivery_bought_one_day_and_sold_the_next_is_two_contract_notes():
    trades = [
        fill(1, "BUY", 10, "1500.00", tradingsymbol="INFY", product="CNC"),
        fill(
            2,
            "SELL",
            10,
            "1600.00",
            tradingsymbol="INFY",
            product="CNC",
            filled_at=MORNING + timedelta(days=1),
        ),
    ]
    # Day 1, bought 15000: brokerage 0; STT 0.1% x 15000 = 15; exchange 15000 x 0.00307% = 0.4605 -> 0.46;
    #   SEBI 0.015 -> 0.02 (half up); stamp 0.015% x 15000 = 2.25 -> 2; GST 18% x (0 + 0.46 + 0.02) = 0.0864
    #   -> 0.09. Total 17.57.
    # Day 2, sold 16000: STT 16; exchange 0.4912 -> 0.49; SEBI 0.016 -> 0.02; no stamp; GST 18% x 0.51 =
    #   0.0918 -> 0.09. Total 16.60.
    day1, day2 = contract_notes(trades, schedule=ZERODHA)
    assert (day1.day, day1.exchange, day2.day) == (date(2026, 6, 1), "NSE", date(2026, 6, 2))
    assert day1.charges == breakdown(brokerage="0.00", stt="15.00", exchange="0.46", sebi="0.02", stamp="2.00",
                                     gst="0.09", turnover="15000.00", orders=1)  # fmt: skip
    assert day2.charges == breakdown(brokerage="0.00", stt="16.00", exchange="0.49", sebi="0.02", stamp="0.00",
                                     gst="0.09", turnover="16000.00", orders=1)  # fmt: skip
    assert (day1.charges.total, day2.charges.total) == (D("17.57"), D("16.60"))
    assert charges_for_trades(trades, schedule=ZERODHA).total == D("34.17")


def test_zerodhas_worked_example_nets_intraday_and_delivery_in_one_scrip():
    # support.zerodha.com, "How is the STT calculated?": 500 bought at 100 and sold at 105, then 200
    # bought at 110. Average (50000 + 22000 + 52500) / 1200 = 103.75; intraday 500 x 103.75 x 0.025%
    # = 12.969 -> 13; delivery 200 x 103.75 x 0.1% = 20.75 -> 21. STT 34.
    trades = [
        fill(1, "BUY", 500, "100"),
        fill(2, "SELL", 500, "105"),
        fill(3, "BUY", 200, "110", product="CNC"),
    ]
    charges = charges_for_trades(trades, schedule=ZERODHA)
    assert charges.stt == D("34.00")
    # Brokerage: 0.03% x 50000 = 15.00, 0.03% x 52500 = 15.75, delivery 0: 30.75.
    # Stamp, netted the same way: of the 72000 bought, 500/700 is intraday (0.003%: 1.542857 -> 2) and
    #   200/700 delivery (0.015%: 3.085714 -> 3): 5.
    # Exchange 124500 x 0.00307% = 3.82215 -> 3.82; SEBI 0.1245 -> 0.12; GST 18% x 34.69 = 6.2442 -> 6.24.
    assert charges == breakdown(brokerage="30.75", stt="34.00", exchange="3.82", sebi="0.12", stamp="5.00",
                                gst="6.24", turnover="124500", orders=3)  # fmt: skip


def test_mtf_orders_pay_mtf_brokerage_and_delivery_statutory_charges():
    # MTF brokerage 0.3% or Rs 20: 0.3% x 5000 = 15.00. STT as delivery: 0.1% x 5000 = 5; stamp 0.015% x 5000
    # = 0.75 -> 1; exchange 5000 x 0.00307% = 0.1535 -> 0.15; SEBI 0.005 -> 0.01; GST 18% x 15.16 = 2.7288 -> 2.73.
    charges = charges_for_trades([fill(1, "BUY", 50, "100", product="MTF")], schedule=ZERODHA)
    assert charges == breakdown(brokerage="15.00", stt="5.00", exchange="0.15", sebi="0.01", stamp="1.00",
                                gst="2.73", turnover="5000", orders=1)  # fmt: skip


# --- grouping and rounding ----------------------------------------------------------------


def test_brokerage_is_per_executed_order_not_per_fill():
    # One order of 200000 in two fills: min(0.03% x 200000, 20) = 20, not 20 + 20.
    one_order = [fill(1, "BUY", 40, "2500"), fill(1, "BUY", 40, "2500")]
    assert charges_for_trades(one_order, schedule=ZERODHA).brokerage == D("20.00")
    two_orders = [fill(1, "BUY", 40, "2500"), fill(2, "BUY", 40, "2500")]
    assert charges_for_trades(two_orders, schedule=ZERODHA).brokerage == D("40.00")
    # Below the cap the percentage applies to the order's whole value, rounded once: 0.03% x 950 = 0.285 -> 0.29.
    small = [fill(1, "BUY", 5, "95.00"), fill(1, "BUY", 5, "95.00")]
    assert charges_for_trades(small, schedule=ZERODHA).brokerage == D("0.29")


def test_stt_rounds_half_up_to_the_rupee_per_instrument():
    def stt(*trades):
        return charges_for_trades(trades, schedule=ZERODHA).stt

    assert stt(fill(1, "SELL", 10, "50.00", product="CNC")) == D("1.00")  # 0.1% x 500 = 0.50 -> 1
    assert stt(fill(1, "SELL", 10, "49.00", product="CNC")) == D("0.00")  # 0.49 -> 0
    # Two scrips of 0.50 each: rounded per scrip, 1 + 1.
    assert stt(fill(1, "SELL", 10, "50.00", product="CNC"),
               fill(2, "SELL", 10, "50.00", product="CNC", tradingsymbol="TCS")) == D("2.00")  # fmt: skip


def test_turnover_charges_round_once_per_column_half_up_to_the_paisa():
    # SEBI on 25000: 0.025 -> 0.03 (half up; half-even would give 0.02).
    assert charges_for_trades([fill(1, "BUY", 250, "100", product="CNC")], schedule=ZERODHA).sebi == D("0.03")
    # Three buys of 130: each 130 x 0.00307% = 0.003991 rounds to nothing; the column's 390 gives 0.011973 -> 0.01.
    tiny = [fill(n, "BUY", 1, "130", product="CNC") for n in range(3)]
    assert charges_for_trades(tiny, schedule=ZERODHA).exchange == D("0.01")


def test_the_trading_day_is_the_ist_date():
    late = datetime(2026, 6, 1, 18, 29, 59, tzinfo=UTC)  # 23:59:59 IST
    after_midnight = datetime(2026, 6, 1, 18, 30, tzinfo=UTC)  # 00:00 IST on the 2nd
    notes = contract_notes([fill(1, "BUY", 1, "100", filled_at=late), fill(2, "SELL", 1, "100",
                            filled_at=after_midnight)], schedule=ZERODHA)  # fmt: skip
    assert [note.day for note in notes] == [date(2026, 6, 1), date(2026, 6, 2)]


def test_each_exchange_is_its_own_column():
    trades = [fill(1, "BUY", 10, "100", exchange="NSE"), fill(2, "BUY", 10, "100", exchange="BSE")]
    bse, nse = contract_notes(trades, schedule=ZERODHA)  # in (day, exchange) order
    assert (bse.exchange, nse.exchange) == ("BSE", "NSE")
    # BSE cash 0.00375%, NSE 0.00307%: on 1000 each, 0.0375 -> 0.04 and 0.0307 -> 0.03.
    assert (bse.charges.exchange, nse.charges.exchange) == (D("0.04"), D("0.03"))


def test_no_trades_no_charges():
    assert charges_for_trades([], schedule=ZERODHA) == ChargeBreakdown()
    assert ChargeBreakdown().total == 0


symbols = st.sampled_from([("RELIANCE", "NSE"), ("TCS", "BSE"), ("NIFTY26JUNFUT", "NFO"),
                           ("NIFTY26JUN24000PE", "NFO"), ("USDINR26JUNFUT", "CDS"), ("GOLD26JUNFUT", "MCX")])  # fmt: skip
random_fills = st.lists(
    st.builds(
        lambda order, symbol, side, quantity, price, day: fill(
            order,
            side,
            quantity,
            str(price),
            tradingsymbol=symbol[0],
            exchange=symbol[1],
            product="MIS" if symbol[1] in ("NSE", "BSE") else "NRML",
            filled_at=MORNING + timedelta(days=day),
        ),
        st.integers(1, 6),
        symbols,
        st.sampled_from(["BUY", "SELL"]),
        st.integers(1, 5000),
        st.decimals(min_value=D("0.05"), max_value=D("90000"), places=2),
        st.integers(0, 2),
    ),  # fmt: skip
    max_size=25,
)


@given(random_fills)
def test_charges_add_up_column_by_column_and_are_never_negative(trades):
    total = charges_for_trades(trades, schedule=ZERODHA)
    columns = contract_notes(trades, schedule=ZERODHA)
    assert sum((c.charges for c in columns), ChargeBreakdown()) == total
    for column in columns:
        own = [
            t
            for t in trades
            if (t.filled_at.astimezone(IST).date(), t.exchange) == (column.day, column.exchange)
        ]
        assert charges_for_trades(own, schedule=ZERODHA) == column.charges
        charges = column.charges
        assert (
            min(charges.brokerage, charges.stt, charges.exchange, charges.sebi, charges.stamp, charges.gst)
            >= 0
        )
        assert charges.brokerage <= 20 * charges.orders
        assert all(getattr(charges, name) == getattr(charges, name).quantize(D("0.01")) for name in
                   ("brokerage", "exchange", "sebi", "gst"))  # fmt: skip
        assert (
            charges.stt == charges.stt.to_integral_value()
            and charges.stamp == charges.stamp.to_integral_value()
        )
    assert total.turnover == sum((t.price * t.quantity for t in trades), D(0))


# --- a desk's own table -------------------------------------------------------------------


OPTIONS = [fill(1, "BUY", 130, "152.35", tradingsymbol="NIFTY26JUN24000CE", exchange="NFO", product="NRML"),
           fill(2, "SELL", 130, "171.80", tradingsymbol="NIFTY26JUN24000CE", exchange="NFO", product="NRML")]  # fmt: skip


def test_an_override_changes_only_what_it_names():
    # The pre-April-2026 options STT (0.1%) and a zero-brokerage plan.
    schedule = schedule_load(text='{"stt": {"equity_options": {"sell": "0.1"}}, '
                                  '"brokerage": {"equity_options": {"max": 0}}}')  # fmt: skip
    assert schedule.source == "default + CHARGES_SCHEDULE"
    # STT 22334 x 0.1% = 22.334 -> 22; brokerage 0; exchange and SEBI as before (14.97, 0.04);
    # GST 18% x (0 + 14.97 + 0.04) = 2.7018 -> 2.70; stamp 1.
    assert charges_for_trades(OPTIONS, schedule=schedule) == breakdown(
        brokerage="0.00", stt="22.00", exchange="14.97", sebi="0.04", stamp="1.00", gst="2.70", turnover="42139.50",
        orders=2,
    )  # fmt: skip
    assert schedule.stt["equity_futures"]["SELL"] == D("0.05")  # untouched


def test_a_file_then_the_variable_override_the_default(tmp_path):
    path = tmp_path / "charges.json"
    path.write_text(json.dumps({"stt": {"equity_options": {"sell": "0.1"}}, "rounding": {"stt": "paisa"}}))
    from_file = schedule_load(file=str(path))
    assert from_file.source == f"default + CHARGES_SCHEDULE_FILE={path}"
    assert charges_for_trades(OPTIONS, schedule=from_file).stt == D("22.33")  # 22.334 to the paisa
    both = schedule_load(
        file=str(path), text='{"stt": {"equity_options": {"sell": 0.12}}}'
    )  # a JSON number is exact
    assert charges_for_trades(OPTIONS, schedule=both).stt == D(
        "26.80"
    )  # 22334 x 0.12% = 26.8008, the file's rounding


def test_without_a_percentage_brokerage_is_flat():
    schedule = schedule_load(text='{"brokerage": {"equity_intraday": {"percent": null, "max": "5"}}}')
    trades = [fill(1, "BUY", 1, "10"), fill(2, "SELL", 1, "10")]
    assert charges_for_trades(trades, schedule=schedule).brokerage == D("10.00")


def test_the_default_table_comes_from_settings(settings):
    assert settings.CHARGES_SCHEDULE == ZERODHA and settings.CHARGES_SCHEDULE.source == "default"
    settings.CHARGES_SCHEDULE = schedule_load(text='{"stt": {"equity_options": {"sell": "0.1"}}}')
    assert charges_for_trades(OPTIONS).stt == D("22.00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "CHARGES_SCHEDULE: not valid JSON"),
        ("[1, 2]", "CHARGES_SCHEDULE: expected a JSON object of overrides, not list"),
        ('{"stt": {"equity_options": {"sell": "abc"}}}', "stt.equity_options.sell: 'abc' is not a number"),
        ('{"stt": {"equity_options": {"sell": true}}}', "stt.equity_options.sell: True is not a number"),
        (
            '{"stt": {"equity_options": {"sell": NaN}}}',
            "CHARGES_SCHEDULE: not valid JSON (NaN is not a number)",
        ),
        (
            '{"stt": {"equity_options": {"sell": "-0.1"}}}',
            "stt.equity_options.sell: '-0.1' must be a finite number",
        ),
        ('{"gst_percent": "Infinity"}', "gst_percent: 'Infinity' must be a finite number"),
        (
            '{"stt": {"equity_options": {"sell": "150"}}}',
            "stt.equity_options.sell: '150' is a percentage above 100",
        ),
        ('{"stt": {"equity_option": {"sell": "0.1"}}}', "stt: unknown key 'equity_option'"),
        ('{"sebi_per_crores": "10"}', "CHARGES_SCHEDULE: unknown key 'sebi_per_crores'"),
        ('{"stt": {"equity_options": {"short": "0.1"}}}', "stt.equity_options: unknown key 'short'"),
        ('{"exchange": {"equity_futures": {"NSE": "0.002"}}}', "'NSE' is not an exchange of equity_futures"),
        ('{"rounding": {"stt": "paise"}}', 'rounding.stt: \'paise\'; use "rupee" or "paisa"'),
        (
            '{"brokerage": {"equity_intraday": null}}',
            "brokerage.equity_intraday: expected an object, not None",
        ),
        (
            '{"stamp": {"equity_delivery": 1.5e400}}',
            "stamp.equity_delivery: Decimal('1.5E+400') is a percentage",
        ),
    ],
)
def test_a_bad_table_is_refused_with_the_key_and_the_reason(text, message):
    with pytest.raises(ScheduleError) as caught:
        schedule_load(text=text)
    assert message in str(caught.value)
    assert isinstance(caught.value, ImproperlyConfigured)


def test_a_bad_file_is_blamed_on_the_file(tmp_path):
    path = tmp_path / "charges.json"
    path.write_text('{"gst_percent": "eighteen"}')
    with pytest.raises(ScheduleError, match=rf"^CHARGES_SCHEDULE_FILE={path}: gst_percent: 'eighteen'"):
        schedule_load(file=str(path), text='{"sebi_per_crore": "10"}')
    with pytest.raises(ScheduleError, match="CHARGES_SCHEDULE_FILE=.*missing.json: cannot be read"):
        schedule_load(file=str(tmp_path / "missing.json"))


def test_start_up_refuses_a_bad_table_and_uses_a_good_one(tmp_path):
    bad = manage("check", env=child_env(CHARGES_SCHEDULE='{"stt": {"equity_futures": {"sell": "0,05"}}}'))
    assert bad.returncode != 0
    assert "CHARGES_SCHEDULE: stt.equity_futures.sell: '0,05' is not a number" in bad.stderr
    path = tmp_path / "desk.json"
    path.write_text('{"gst_percent": "18"}')
    good = manage("check", env=child_env(CHARGES_SCHEDULE_FILE=str(path)))
    assert good.returncode == 0, good.stderr


# --- trades that cannot be charged --------------------------------------------------------


@pytest.mark.parametrize(
    ("trade", "message"),
    [
        (fill(7, "BUY", 1, "100", product="NRML"), "trade of order 7 (NSE:RELIANCE): product 'NRML' does not"),
        (fill(7, "BUY", 1, "100", exchange="NFO", tradingsymbol="NIFTY"), "'NIFTY' is neither a future"),
        (fill(7, "BUY", 1, "100", exchange="NYSE"), "no charges for exchange 'NYSE'"),
        (fill(7, "BUY", 1, "100", exchange="NCO", tradingsymbol="GOLD26JUNFUT"),
         "has no rate for exchange.commodity_futures.NCO: add it"),
        (fill(7, "HOLD", 1, "100"), "transaction_type 'HOLD' is neither BUY nor SELL"),
        (fill(7, "BUY", 0, "100"), "quantity 0 is not a positive whole number"),
        (Fill(7, "BUY", 1, 100.5), "price 100.5 must be a Decimal"),
        (fill(7, "BUY", 1, "-1"), "price Decimal('-1') must be a Decimal, 0 or more"),
        (fill(7, "BUY", 1, "100", filled_at=datetime(2026, 6, 1, 10)), "must be an aware datetime"),  # noqa: DTZ001
    ],
)  # fmt: skip
def test_a_trade_the_table_cannot_charge_is_refused_by_name(trade, message):
    with pytest.raises(ChargesError) as caught:
        charges_for_trades([fill(1, "BUY", 1, "100"), trade], schedule=ZERODHA)
    assert message in str(caught.value)


def test_a_desk_can_add_the_rate_an_exchange_lacks():
    schedule = schedule_load(text='{"exchange": {"commodity_futures": {"NCO": "0.0001"}}}')
    gold = fill(1, "BUY", 10, "10000", exchange="NCO", tradingsymbol="GOLD26JUNFUT", product="NRML")
    assert charges_for_trades([gold], schedule=schedule).exchange == D("0.10")  # 100000 x 0.0001%


# --- a strategy's day from the database ----------------------------------------------------


def _trade(strategy, instrument, *, side, quantity, price, at, order=None, order_quantity=None):
    order = order or Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange,
        tradingsymbol=instrument.tradingsymbol, instrument_token=instrument.instrument_token,
        transaction_type=side, quantity=order_quantity or quantity,
        product="MIS" if instrument.exchange == "NSE" else "NRML", order_type="MARKET",
        idempotency_key=f"charges-{Order.objects.count()}", placed_at=at, updated_at=at,
    )  # fmt: skip
    return Trade.objects.create(
        order=order, trade_id=f"T{Trade.objects.count()}", strategy=strategy, instrument=instrument,
        exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, product=order.product, transaction_type=side,
        quantity=quantity, price=D(price), filled_at=at,
    )  # fmt: skip


@pytest.mark.django_db
def test_charges_for_day_reads_the_strategys_trades_of_that_ist_day(manual, django_assert_num_queries):
    other = Strategy.objects.create(name="other")
    reliance = InstrumentFactory(tradingsymbol="RELIANCE")
    option = NiftyOptionFactory(tradingsymbol="NIFTY26JUN24000CE")
    day, midnight = date(2026, 6, 1), datetime(2026, 6, 1, tzinfo=IST)
    hour = timedelta(hours=1)
    buy = _trade(manual, reliance, side="BUY", quantity=100, price="2499.90", at=midnight + 10 * hour,
                 order_quantity=130)  # fmt: skip
    _trade(
        manual, reliance, side="BUY", quantity=30, price="2500.10", at=midnight + 10 * hour, order=buy.order
    )
    _trade(manual, reliance, side="SELL", quantity=130, price="2540.00", at=midnight + 14 * hour)
    # The option's two legs at 00:00 and 23:59:59 IST: both belong to the day.
    _trade(manual, option, side="BUY", quantity=130, price="152.35", at=midnight)
    last_second = midnight + 24 * hour - timedelta(seconds=1)
    _trade(manual, option, side="SELL", quantity=130, price="171.80", at=last_second)
    # Not that day's, or not that strategy's:
    _trade(manual, reliance, side="BUY", quantity=5, price="2400", at=midnight - timedelta(seconds=1))
    _trade(manual, reliance, side="BUY", quantity=5, price="2400", at=midnight + 24 * hour)
    _trade(other, reliance, side="BUY", quantity=5, price="2400", at=midnight + 11 * hour)

    with django_assert_num_queries(1):
        charges = charges_for_day(strategy=manual, day=day, schedule=ZERODHA)
    # NSE column: bought 100 x 2499.90 + 30 x 2500.10 = 324993.00 in one order, sold 130 x 2540 = 330200.00.
    #   Brokerage 20 + 20 = 40 (both orders over the cap). STT: 655193 / 260 average, 130 matched:
    #   655193 x 130 / 260 x 0.025% = 81.899125 -> 82. Exchange 655193 x 0.00307% = 20.1144251 -> 20.11.
    #   SEBI 0.655193 -> 0.66. Stamp 324993 x 0.003% = 9.74979 -> 10. GST 18% x 60.77 = 10.9386 -> 10.94.
    #   Column total 163.71.
    # NFO column: the options round trip above, 99.91.
    assert charges == breakdown(brokerage="80.00", stt="116.00", exchange="35.08", sebi="0.70", stamp="11.00",
                                gst="20.84", turnover="697332.50", orders=4)  # fmt: skip
    assert charges.total == D("163.71") + D("99.91")
    # Trade rows are trades: the NFO leg alone is the options contract note.
    notes = contract_notes(Trade.objects.filter(exchange="NFO"), schedule=ZERODHA)
    assert [note.charges.total for note in notes] == [D("99.91")]
    assert (
        charges_for_day(strategy=manual, day=day + timedelta(days=7), schedule=ZERODHA) == ChargeBreakdown()
    )
