"""The ticker's binary protocol, against packets built by hand from Kite's documented layout."""

import logging
import struct
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.feed.protocol import HEARTBEAT, build_frame, build_packet, parse_frame, parse_packet

NSE_TOKEN = 408065  # & 0xff == 1
INDEX_TOKEN = 256265  # & 0xff == 9
CDS_TOKEN = (1234 << 8) | 3
BCD_TOKEN = (1234 << 8) | 6


def frame(*packets: bytes) -> bytes:
    out = struct.pack(">H", len(packets))
    for packet in packets:
        out += struct.pack(">H", len(packet)) + packet
    return out


def test_ltp_packet():
    [tick] = parse_frame(frame(struct.pack(">Ii", NSE_TOKEN, 157315)))
    assert tick == {
        "instrument_token": NSE_TOKEN,
        "mode": "ltp",
        "tradable": True,
        "last_price": Decimal("1573.15"),
    }


def test_quote_packet_by_hand():
    packet = struct.pack(
        ">IiIiIIIiiii", NSE_TOKEN, 157315, 5, 157200, 1_000_000, 300, 400, 156000, 158000, 155000, 156780
    )
    [tick] = parse_frame(frame(packet))
    assert tick["mode"] == "quote" and tick["tradable"]
    assert tick["last_price"] == Decimal("1573.15") and tick["average_traded_price"] == Decimal("1572.00")
    assert (tick["last_traded_quantity"], tick["volume"]) == (5, 1_000_000)
    assert (tick["total_buy_quantity"], tick["total_sell_quantity"]) == (300, 400)
    assert tick["ohlc"] == {"open": Decimal("1560.00"), "high": Decimal("1580.00"), "low": Decimal("1550.00"),
                            "close": Decimal("1567.80")}  # fmt: skip
    assert tick["change"] == Decimal("5.35")
    assert tick["change_percent"] == Decimal("0.34")


def test_full_packet_by_hand_with_depth():
    head = struct.pack(
        ">IiIiIIIiiii", NSE_TOKEN, 157315, 5, 157200, 1000, 300, 400, 156000, 158000, 155000, 156780
    )
    tail = struct.pack(">IIIII", 1625461887, 5000, 6000, 4000, 1625461888)
    depth = b"".join(struct.pack(">IiH2x", 10 + i, 157300 - i * 5, i + 1) for i in range(5))
    depth += b"".join(struct.pack(">IiH2x", 20 + i, 157320 + i * 5, i + 1) for i in range(5))
    packet = head + tail + depth
    assert len(packet) == 184
    [tick] = parse_frame(frame(packet))
    assert tick["mode"] == "full"
    assert (tick["oi"], tick["oi_day_high"], tick["oi_day_low"]) == (5000, 6000, 4000)
    assert tick["exchange_timestamp"] == "2021-07-05T10:41:28+05:30"  # aware, IST
    assert tick["last_trade_time"] == "2021-07-05T10:41:27+05:30"
    assert tick["depth"]["buy"][0] == {"quantity": 10, "price": Decimal("1573.00"), "orders": 1}
    assert tick["depth"]["sell"][4] == {"quantity": 24, "price": Decimal("1573.40"), "orders": 5}


def test_index_packets():
    quote = struct.pack(">Iiiiiii", INDEX_TOKEN, 2435050, 2440000, 2420000, 2425000, 2430000, 5050)
    full = quote + struct.pack(">I", 1625461888)
    q, f = parse_frame(frame(quote, full))
    assert q["mode"] == "quote" and not q["tradable"] and q["last_price"] == Decimal("24350.50")
    assert q["change"] == Decimal("50.50") and q["change_percent"] == Decimal("0.21")
    assert "exchange_timestamp" not in q
    assert f["mode"] == "full" and f["exchange_timestamp"] == "2021-07-05T10:41:28+05:30"


def test_currency_prices_use_their_own_divisors():
    [cds] = parse_frame(frame(struct.pack(">Ii", CDS_TOKEN, 832_525_000)))
    [bcd] = parse_frame(frame(struct.pack(">Ii", BCD_TOKEN, 832_525)))
    assert cds["last_price"] == Decimal("83.2525")
    assert bcd["last_price"] == Decimal("83.2525")


def test_negative_price_stays_negative():
    [tick] = parse_frame(frame(struct.pack(">Ii", NSE_TOKEN, -3763)))
    assert tick["last_price"] == Decimal("-37.63")


def test_several_packets_in_one_frame():
    packets = [struct.pack(">Ii", NSE_TOKEN + i * 256, 100 + i) for i in range(50)]
    ticks = parse_frame(frame(*packets))
    assert [t["instrument_token"] for t in ticks] == [NSE_TOKEN + i * 256 for i in range(50)]


def test_heartbeat_and_empty_frames_give_nothing():
    assert parse_frame(HEARTBEAT) == []
    assert parse_frame(b"") == []
    assert parse_frame(frame()) == []


def test_malformed_frames_are_logged_and_skipped(caplog):
    good = struct.pack(">Ii", NSE_TOKEN, 100)
    caplog.set_level(logging.WARNING)
    # a packet of a length Kite never sends, between two good ones
    assert len(parse_frame(frame(good, b"\x00" * 13, good))) == 2
    # the count promises more packets than the frame holds
    assert len(parse_frame(struct.pack(">H", 3) + struct.pack(">H", 8) + good)) == 1
    # a length running past the end of the frame
    assert parse_frame(struct.pack(">HH", 1, 184) + b"\x00" * 20) == []
    # garbage: 65535 packets promised, the first 4660 bytes long in a frame of 11
    assert parse_frame(b"\xff\xff\x12\x34garbage") == []
    assert "unexpected length 13" in caplog.text and "truncated packet: 7 of 4660 bytes" in caplog.text


MODES = {"ltp", "quote", "full"}


@given(st.binary(max_size=600))
def test_fuzz_never_raises_and_gives_only_well_formed_ticks(data):
    ticks = parse_frame(data)
    promised = int.from_bytes(data[:2], "big") if len(data) >= 2 else 0
    assert len(ticks) <= promised
    # Every packet costs its 2-byte length plus at least the 8 bytes of the smallest one.
    assert 2 + len(ticks) * 10 <= max(len(data), 2)
    for tick in ticks:
        assert tick["mode"] in MODES and isinstance(tick["last_price"], Decimal)
        assert 0 <= tick["instrument_token"] < 2**32


packet_strategy = st.one_of(
    st.tuples(st.just("good"), st.sampled_from(["ltp", "quote", "full"]), st.integers(1, 2**24 - 1)),
    st.tuples(st.just("junk"), st.binary(max_size=200).filter(lambda b: len(b) not in (8, 28, 32, 44, 184))),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(packet_strategy, max_size=20))
def test_fuzz_a_frame_mixing_good_and_junk_packets_gives_exactly_the_good_ones_in_order(parts):
    packets, expected = [], []
    for kind, *rest in parts:
        if kind == "good":
            mode, unit = rest
            token = (unit << 8) | 1
            packets.append(build_packet(mode, token, last=Decimal("101.25")))
            expected.append((token, mode))
        else:
            packets.append(rest[0])
    ticks = parse_frame(build_frame(packets))
    assert [(t["instrument_token"], t["mode"]) for t in ticks] == expected
    assert all(t["last_price"] == Decimal("101.25") for t in ticks)


prices = st.decimals(min_value=Decimal("0.05"), max_value=Decimal("999999"), places=2)


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from(["ltp", "quote", "full"]),
    token=st.integers(1, 2**24 - 1).map(lambda n: (n << 8) | 1),
    last=prices, close=prices, volume=st.integers(0, 2**32 - 1), oi=st.integers(0, 2**32 - 1),
    stamp=st.integers(1_000_000_000, 2_000_000_000),
)  # fmt: skip
def test_property_round_trip(mode, token, last, close, volume, oi, stamp):
    packet = build_packet(mode, token, last=last, close=close, volume=volume, oi=oi, exchange_timestamp=stamp,
                          depth=[(25, last, 3)])  # fmt: skip
    [tick] = parse_frame(build_frame([packet]))
    assert tick["instrument_token"] == token and tick["mode"] == mode and tick["last_price"] == last
    if mode != "ltp":
        assert tick["volume"] == volume and tick["ohlc"]["close"] == close
        assert tick["change"] == last - close
    if mode == "full":
        assert tick["oi"] == oi and tick["depth"]["buy"][0] == {"quantity": 25, "price": last, "orders": 3}


def test_parse_packet_rejects_unknown_lengths():
    assert parse_packet(b"\x00" * 12) is None
