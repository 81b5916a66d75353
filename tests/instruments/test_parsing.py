import gzip
import io
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instruments.sync.errors import BadInput
from instruments.sync.parsing import ROW_FIELDS, Rejects, parse_kite_csv, parse_upstox
from instruments.sync.sources import _maybe_gunzip
from tests.instruments.dumps import kite_csv, kite_row, nifty_universe


def parse(data: bytes, parser=parse_kite_csv):
    rejects = Rejects()
    stream = _maybe_gunzip(io.BytesIO(data))
    rows = [dict(zip(ROW_FIELDS, row, strict=True)) for row in parser(stream, rejects)]
    return rows, rejects


RAW_KITE = (
    b"instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,tick_size,lot_size,"
    b"instrument_type,segment,exchange\n"
    b'256265,1001,NIFTY 50,"NIFTY 50",0.0,,0.0,0.0,0,EQ,INDICES,NSE\n'
    b'3813889,14898,M&M,"MAHINDRA & MAHINDRA",1500.25,,0.0,0.05,1,EQ,NSE,NSE\n'
    b"12073986,47164,NIFTY24DEC24350CE,,2528.4,2024-12-26,24350.0,0.05,75,CE,NFO-OPT,NFO\n"
    b"412675,1612,USDINR24DEC83.25CE,USDINR,0.0125,2024-12-27,83.25,0.0025,1,CE,CDS-OPT,CDS\n"
)


def test_raw_kite_csv():
    rows, rejects = parse(RAW_KITE)
    assert rejects.count == 0
    index, equity, option, currency = rows
    assert index["tradingsymbol"] == "NIFTY 50" and index["segment"] == "INDICES"
    assert index["tick_size"] == Decimal(0) and index["lot_size"] == 0 and index["expiry"] is None
    assert equity["tradingsymbol"] == "M&M" and equity["name"] == "MAHINDRA & MAHINDRA"
    assert equity["last_price"] == Decimal("1500.25") and isinstance(equity["last_price"], Decimal)
    assert option["expiry"] == date(2024, 12, 26) and option["strike"] == Decimal("24350")
    assert option["lot_size"] == 75 and option["instrument_token"] == 12073986
    assert currency["strike"] == Decimal("83.25") and currency["tick_size"] == Decimal("0.0025")
    assert all(row["line"] == n for n, row in enumerate(rows, start=2))


def test_resaved_csv_parses_the_same_as_raw():
    rows = nifty_universe()
    raw, _ = parse(kite_csv(rows))
    resaved, rejects = parse(kite_csv(rows, resaved=True, bom=True))
    assert rejects.count == 0
    assert raw == resaved


def test_gzip_is_detected_from_the_bytes():
    rows, _ = parse(gzip.compress(RAW_KITE))
    assert len(rows) == 4


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"abc,1,X,,0,,0,0.05,1,EQ,NSE,NSE", "bad instrument_token 'abc'"),
        (b",1,X,,0,,0,0.05,1,EQ,NSE,NSE", "missing instrument_token"),
        (b"5,1,X,,1.2.3,,0,0.05,1,EQ,NSE,NSE", "bad last_price '1.2.3'"),
        (b"5,1,X,,1,2024-13-45,0,0.05,1,EQ,NSE,NSE", "bad expiry '2024-13-45'"),
        (b"5,1,X,,1,someday,0,0.05,1,EQ,NSE,NSE", "bad expiry 'someday'"),
        (b"5,1,X,,1,,0,0.05,1.5,EQ,NSE,NSE", "bad lot_size '1.5'"),
        (b"5,1,X,,NaN,,0,0.05,1,EQ,NSE,NSE", "bad last_price 'NaN'"),
        (b"5,1,,,1,,0,0.05,1,EQ,NSE,NSE", "missing tradingsymbol"),
        (b"5,1,X,,1,,0,0.05,1,EQ,NSE", "expected 12 fields, got 11"),
        (b"5,1,X,,1,,0,0.0000001,1,EQ,NSE,NSE", "more than 6 decimal places"),
    ],
)
def test_malformed_rows_are_rejected_with_line_and_reason(line, reason):
    data = RAW_KITE + line + b"\n" + b"999,1,LAST,,1,,0,0.05,1,EQ,NSE,NSE\n"
    rows, rejects = parse(data)
    assert [r["tradingsymbol"] for r in rows][-1] == "LAST"  # the sync goes on past the bad row
    assert rejects.count == 1
    assert rejects.first[0]["line"] == 6
    assert reason in rejects.first[0]["reason"]


def test_duplicate_token_is_rejected():
    data = RAW_KITE + b"256265,1,DUP,,1,,0,0.05,1,EQ,NSE,NSE\n"
    rows, rejects = parse(data)
    assert len(rows) == 4
    assert rejects.first == [{"line": 6, "reason": "duplicate instrument_token 256265 (first on line 2)"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
        (b"token,symbol\n1,X\n", "header lacks"),
        (b'{"status": "error", "message": "Invalid token"}', "header lacks"),
        (gzip.compress(RAW_KITE)[:-30], "truncated"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_inputs_that_are_not_dumps_are_refused(data, message):
    with pytest.raises(BadInput, match=message):
        parse(data)


UPSTOX_RECORDS = [
    {"segment": "NSE_EQ", "name": "RELIANCE INDUSTRIES LTD", "exchange": "NSE", "isin": "INE002A01018",
     "instrument_type": "EQ", "instrument_key": "NSE_EQ|INE002A01018", "lot_size": 1, "freeze_quantity": 100000.0,
     "exchange_token": "2885", "tick_size": 10.0, "trading_symbol": "RELIANCE"},
    {"segment": "NSE_INDEX", "name": "Nifty Bank", "exchange": "NSE", "instrument_type": "INDEX",
     "instrument_key": "NSE_INDEX|Nifty Bank", "exchange_token": "26009", "trading_symbol": "BANKNIFTY"},
    {"weekly": False, "segment": "NSE_FO", "name": "BANKNIFTY", "exchange": "NSE", "expiry": 1793125799000,
     "instrument_type": "FUT", "instrument_key": "NSE_FO|48699", "lot_size": 30, "exchange_token": "48699",
     "tick_size": 20.0, "trading_symbol": "BANKNIFTY FUT 27 OCT 26", "strike_price": 0.0},
    {"segment": "NCD_FO", "name": "USDINR", "exchange": "NSE", "expiry": 1793125799000, "instrument_type": "CE",
     "instrument_key": "NCD_FO|1234", "lot_size": 1, "exchange_token": "1234", "tick_size": 0.25,
     "trading_symbol": "USDINR 83.25 CE 27 OCT 26", "strike_price": 83.25},
    {"segment": "BSE_EQ", "name": "SOME CO", "exchange": "BSE", "instrument_type": "A",
     "instrument_key": "BSE_EQ|INE000A01010", "lot_size": 1, "exchange_token": "500001", "tick_size": 5.0,
     "trading_symbol": "SOMECO"},
]  # fmt: skip


def test_upstox_json_maps_onto_the_model():
    import json

    rows, rejects = parse(gzip.compress(json.dumps(UPSTOX_RECORDS).encode()), parse_upstox)
    assert rejects.count == 0
    equity, index, future, currency, bse = rows
    assert equity["instrument_key"] == "NSE_EQ|INE002A01018" and equity["instrument_token"] is None
    assert equity["tick_size"] == Decimal("0.10")  # paise -> rupees
    assert equity["exchange"] == "NSE" and equity["segment"] == "NSE" and equity["instrument_type"] == "EQ"
    assert index["segment"] == "INDICES" and index["lot_size"] == 0 and index["tick_size"] == 0
    assert future["expiry"] == date(2026, 10, 27)  # 23:59:59 IST, not the UTC date
    assert future["exchange"] == "NFO" and future["segment"] == "NFO-FUT"
    assert currency["exchange"] == "CDS" and currency["segment"] == "CDS-OPT"
    assert currency["tick_size"] == Decimal("0.0025") and currency["strike"] == Decimal("83.25")
    assert bse["instrument_type"] == "EQ" and bse["exchange"] == "BSE"


def test_upstox_json_numbers_never_pass_through_float():
    """JSON numbers are read as Decimal from their text: a float would round these (its 17
    significant digits), and integers and strings stay exactly what the dump says."""
    text = (
        b'[{"segment": "NSE_FO", "name": "NIFTY", "instrument_type": "CE", "instrument_key": "NSE_FO|1",'
        b' "trading_symbol": "NIFTY 26 OCT 26 24050.2525 CE", "expiry": 1793125799000, "lot_size": 75,'
        b' "exchange_token": "9007199254740993", "tick_size": 5.0, "strike_price": 24050.2525,'
        b' "last_price": 12345678901234.5678},'
        b' {"segment": "NSE_EQ", "name": "A", "instrument_type": "EQ", "instrument_key": "NSE_EQ|2",'
        b' "trading_symbol": "A", "exchange_token": 9007199254740993, "tick_size": 0.1, "lot_size": 1.0,'
        b' "last_price": "2400.55", "strike_price": 1e2}]'
    )
    rows, rejects = parse(text, parse_upstox)
    assert rejects.count == 0, rejects.first
    option, equity = rows
    assert Decimal("12345678901234.5678") != 12345678901234.5678  # the value a float changes
    assert option["last_price"] == Decimal("12345678901234.5678")
    assert option["strike"] == Decimal("24050.2525")
    assert option["tick_size"] == Decimal("0.05") and option["lot_size"] == 75
    assert option["exchange_token"] == 9007199254740993 == equity["exchange_token"]  # beyond a float's 2**53
    assert option["expiry"] == date(2026, 10, 27)
    assert equity["last_price"] == Decimal("2400.55") and equity["tick_size"] == Decimal("0.001")
    assert equity["lot_size"] == 1 and equity["strike"] == Decimal(100)
    for value in (option["last_price"], option["strike"], equity["tick_size"], equity["strike"]):
        assert isinstance(value, Decimal)


def test_upstox_csv_flavour():
    data = (
        b'"instrument_key","exchange_token","tradingsymbol","name","last_price","expiry","strike","tick_size",'
        b'"lot_size","instrument_type","option_type","exchange"\r\n'
        b'"NSE_FO|164693","164693","RELIANCE24JAN1840CE","RELIANCE INDUSTRIES LTD","424.8","2024-01-25",'
        b'"1840.0","0.05","250","OPTSTK","CE","NSE_FO"\r\n'
        b'"NSE_EQ|INE002A01018","2885","RELIANCE","RELIANCE INDUSTRIES LTD","2400","","","0.05","1","EQUITY","",'
        b'"NSE_EQ"\r\n'
    )
    rows, rejects = parse(data, parse_upstox)
    assert rejects.count == 0
    option, equity = rows
    assert (
        option["instrument_type"] == "CE" and option["segment"] == "NFO-OPT" and option["exchange"] == "NFO"
    )
    assert option["tick_size"] == Decimal("0.05") and option["expiry"] == date(2024, 1, 25)
    assert equity["instrument_type"] == "EQ" and equity["segment"] == "NSE"


def test_upstox_truncated_json_is_refused():
    import json

    data = json.dumps(UPSTOX_RECORDS).encode()[:-40]
    with pytest.raises(BadInput, match="truncated"):
        parse(data, parse_upstox)


def test_upstox_duplicate_key_rejected():
    import json

    rows, rejects = parse(json.dumps([*UPSTOX_RECORDS, UPSTOX_RECORDS[0]]).encode(), parse_upstox)
    assert len(rows) == 5
    assert "duplicate instrument_key NSE_EQ|INE002A01018" in rejects.first[0]["reason"]


symbols = (
    st.text(alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 &-."), min_size=1, max_size=30)
    .map(str.strip)
    .filter(bool)
)
prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("99999999"), places=2, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**32 - 1),
            symbols,
            prices,
            st.sampled_from(["", "2025-01-30", "2099-12-31"]),
            st.decimals(min_value=0, max_value=100000, places=2),
            st.integers(0, 100000),
        ),  # fmt: skip
        min_size=1,
        max_size=20,
        unique_by=lambda t: t[0],
    ),  # fmt: skip
    st.booleans(),
)
def test_property_kite_round_trip(rows, resaved):
    built = [
        kite_row(token, symbol, price=str(price), expiry=expiry, strike=str(strike), lot=str(lot))
        for token, symbol, price, expiry, strike, lot in rows
    ]
    parsed, rejects = parse(kite_csv(built, resaved=resaved))
    assert rejects.count == 0
    for (token, symbol, price, expiry, strike, lot), row in zip(rows, parsed, strict=True):
        assert row["instrument_token"] == token
        assert row["tradingsymbol"] == symbol
        assert row["last_price"] == price
        assert row["strike"] == strike
        assert row["lot_size"] == lot
        assert row["expiry"] == (date.fromisoformat(expiry) if expiry else None)
