"""Building broker dumps for tests, in the shapes real ones come in."""

import csv
import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

KITE_HEADER = [
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry", "strike",
    "tick_size", "lot_size", "instrument_type", "segment", "exchange",
]  # fmt: skip


def kite_row(token, symbol, *, exchange="NSE", segment=None, itype="EQ", name="", expiry="", strike="0.0",
             tick="0.05", lot="1", price="0.0", exchange_token=None):  # fmt: skip
    return {
        "instrument_token": str(token),
        "exchange_token": str(exchange_token if exchange_token is not None else token // 256),
        "tradingsymbol": symbol,
        "name": name,
        "last_price": price,
        "expiry": expiry,
        "strike": strike,
        "tick_size": tick,
        "lot_size": lot,
        "instrument_type": itype,
        "segment": segment or exchange,
        "exchange": exchange,
    }


def kite_csv(rows, *, resaved=False, bom=False) -> bytes:
    """Kite's CSV; ``resaved`` imitates a spreadsheet: ``24350.0`` integers, CRLF, all quoted."""
    out = io.StringIO()
    writer = csv.writer(
        out,
        lineterminator="\r\n" if resaved else "\n",
        quoting=csv.QUOTE_ALL if resaved else csv.QUOTE_MINIMAL,
    )
    writer.writerow(KITE_HEADER)
    for row in rows:
        values = dict(row)
        if resaved:
            for key in ("instrument_token", "exchange_token", "lot_size"):
                if values[key] and "." not in values[key]:
                    values[key] = f"{values[key]}.0"
            if values["strike"] in ("0.0", "0"):
                values["strike"] = ""
        writer.writerow([values[h] for h in KITE_HEADER])
    data = out.getvalue().encode()
    return (b"\xef\xbb\xbf" + data) if bom else data


def write(path: Path, data: bytes, *, gz: bool = False) -> str:
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def upstox_json(records) -> bytes:
    return json.dumps(records).encode()


def nifty_universe():
    """A small, realistic full dump: indices, equities, NIFTY/BANKNIFTY derivatives, CDS, MCX."""
    rows = [
        kite_row(256265, "NIFTY 50", segment="INDICES", name="NIFTY 50", tick="0.0", lot="0"),
        kite_row(260105, "NIFTY BANK", segment="INDICES", name="NIFTY BANK", tick="0.0", lot="0"),
        kite_row(738561, "RELIANCE", name="RELIANCE INDUSTRIES", price="2400.5"),
        kite_row(3813889, "M&M", name="MAHINDRA & MAHINDRA", price="1500.25"),
        kite_row(2714625, "BAJAJ-AUTO", name="BAJAJ AUTO", price="9000"),
        kite_row(128083204, "RELIANCE", exchange="BSE", name="RELIANCE INDUSTRIES", price="2401.0"),
    ]
    token = 10_000_002  # NFO tokens end in 0x02
    for underlying, base in (("NIFTY", 24000), ("BANKNIFTY", 52000)):
        rows.append(kite_row(token, f"{underlying}99DECFUT", exchange="NFO", segment="NFO-FUT", itype="FUT",
                             name=underlying, expiry="2099-12-30", lot="75", price=str(base)))  # fmt: skip
        token += 256
        for i in range(5):
            strike = base + i * 50
            for kind in ("CE", "PE"):
                rows.append(kite_row(token, f"{underlying}99DEC{strike}{kind}", exchange="NFO", segment="NFO-OPT",
                                     itype=kind, name=underlying, expiry="2099-12-30", strike=f"{strike}.0",
                                     lot="75", price="120.5"))  # fmt: skip
                token += 256
    rows.append(kite_row(10_500_002, "RELIANCE99DECFUT", exchange="NFO", segment="NFO-FUT", itype="FUT",
                         name="RELIANCE", expiry="2099-12-30", lot="250"))  # fmt: skip
    rows.append(kite_row(412675, "USDINR99DEC83.25CE", exchange="CDS", segment="CDS-OPT", itype="CE",
                         name="USDINR", expiry="2099-12-29", strike="83.25", tick="0.0025", lot="1"))  # fmt: skip
    rows.append(kite_row(53496327, "CRUDEOIL99DECFUT", exchange="MCX", segment="MCX-FUT", itype="FUT",
                         name="CRUDEOIL", expiry="2099-12-18", tick="1.0", lot="100", price="6500"))  # fmt: skip
    return rows


def as_decimal(text: str) -> Decimal:
    return Decimal(text) if text else Decimal(0)
