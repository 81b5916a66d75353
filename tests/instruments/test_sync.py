"""The sync against the database: identity, soft delete, scope, safety, presets, dry run."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from instruments.models import Instrument, SyncRun
from instruments.services import instrument_sync
from instruments.sync.errors import BadInput, ShrinkRefused, SourceUnreachable
from tests.instruments.dumps import kite_csv, kite_row, nifty_universe, write

pytestmark = pytest.mark.django_db


def sync(tmp_path, rows, name="dump.csv", **kwargs):
    path = write(tmp_path / name, kite_csv(rows), gz=kwargs.pop("gz", False))
    return instrument_sync(source="kite", path=path, **kwargs)


def snapshot():
    return list(Instrument.objects.order_by("id").values())


def listed(**filters):
    return Instrument.objects.filter(is_listed=True, **filters)


def test_first_sync_inserts_and_resync_changes_nothing(tmp_path):
    rows = nifty_universe()
    report = sync(tmp_path, rows)
    assert report.status == "ok" and report.inserted == len(rows) and report.rejected == 0
    assert Instrument.objects.count() == len(rows)
    option = Instrument.objects.get(tradingsymbol="NIFTY99DEC24050CE")
    assert option.strike == Decimal("24050") and option.lot_size == 75 and option.segment == "NFO-OPT"
    usd = Instrument.objects.get(tradingsymbol="USDINR99DEC83.25CE")
    assert usd.tick_size == Decimal("0.0025") and usd.strike == Decimal("83.25")
    before = snapshot()

    again = sync(tmp_path, rows, gz=True)
    assert (again.inserted, again.updated, again.delisted, again.unchanged) == (0, 0, 0, len(rows))
    after = snapshot()
    for old, new in zip(before, after, strict=True):
        old.pop("last_seen_at"), new.pop("last_seen_at")
        assert old == new


def test_changed_fields_are_updated(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    rows[2] = {**rows[2], "lot_size": "5", "last_price": "2500.75"}
    report = sync(tmp_path, rows)
    assert report.updated == 1 and report.unchanged == len(rows) - 1
    reliance = Instrument.objects.get(tradingsymbol="RELIANCE", exchange="NSE")
    assert reliance.lot_size == 5 and reliance.last_price == Decimal("2500.75")


def test_missing_rows_are_delisted_not_deleted_and_relisted_when_back(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    reliance = Instrument.objects.get(tradingsymbol="RELIANCE", exchange="NSE")
    reliance.is_active = True
    reliance.save(update_fields=["is_active"])

    report = sync(tmp_path, [r for r in rows if r["tradingsymbol"] != "RELIANCE" or r["exchange"] != "NSE"])
    assert report.delisted == 1 and report.deactivated == 1
    reliance.refresh_from_db()
    assert not reliance.is_listed and not reliance.is_active and reliance.delisted_at is not None

    report = sync(tmp_path, rows)
    assert report.relisted == 1 and report.inserted == 0
    reliance.refresh_from_db()
    assert reliance.is_listed and reliance.delisted_at is None and not reliance.is_active
    assert Instrument.objects.filter(tradingsymbol="RELIANCE", exchange="NSE").count() == 1


def test_reused_token_names_a_new_contract_and_the_old_row_keeps_its_contract(tmp_path):
    old = kite_row(10_000_002, "NIFTY24DEC24000CE", exchange="NFO", segment="NFO-OPT", itype="CE", name="NIFTY",
                   expiry="2024-12-26", strike="24000.0", lot="75")  # fmt: skip
    keep = kite_row(738561, "RELIANCE")
    sync(tmp_path, [old, keep])
    old_row = Instrument.objects.get(instrument_token=10_000_002)

    new = kite_row(10_000_002, "NIFTY25MAR23000PE", exchange="NFO", segment="NFO-OPT", itype="PE", name="NIFTY",
                   expiry="2025-03-27", strike="23000.0", lot="75")  # fmt: skip
    report = sync(tmp_path, [new, keep])
    assert report.delisted == 1 and report.inserted == 1
    old_row.refresh_from_db()
    assert old_row.tradingsymbol == "NIFTY24DEC24000CE" and not old_row.is_listed
    current = listed().get(instrument_token=10_000_002)
    assert current.pk != old_row.pk and current.tradingsymbol == "NIFTY25MAR23000PE"


def test_contract_back_under_a_new_token_is_the_same_row(tmp_path):
    contract = dict(
        exchange="NFO", segment="NFO-FUT", itype="FUT", name="NIFTY", expiry="2099-12-30", lot="75"
    )
    sync(tmp_path, [kite_row(10_000_002, "NIFTY99DECFUT", **contract), kite_row(738561, "RELIANCE")])
    row = Instrument.objects.get(tradingsymbol="NIFTY99DECFUT")
    report = sync(tmp_path, [kite_row(20_000_002, "NIFTY99DECFUT", **contract), kite_row(738561, "RELIANCE")])
    assert report.inserted == 0 and report.delisted == 0 and report.updated == 1
    row.refresh_from_db()
    assert row.instrument_token == 20_000_002 and row.is_listed


def test_tokens_swapped_between_two_contracts(tmp_path):
    a = dict(exchange="NFO", segment="NFO-OPT", itype="CE", name="NIFTY", expiry="2099-12-30", lot="75")
    sync(tmp_path, [kite_row(1_000_002, "NIFTY99DEC100CE", strike="100", **a),
                    kite_row(2_000_002, "NIFTY99DEC200CE", strike="200", **a)])  # fmt: skip
    first = Instrument.objects.get(tradingsymbol="NIFTY99DEC100CE")
    report = sync(tmp_path, [kite_row(2_000_002, "NIFTY99DEC100CE", strike="100", **a),
                             kite_row(1_000_002, "NIFTY99DEC200CE", strike="200", **a)])  # fmt: skip
    assert report.updated == 2 and report.inserted == 0 and report.delisted == 0
    first.refresh_from_db()
    assert first.instrument_token == 2_000_002


def test_an_exchange_dump_never_delists_other_exchanges(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    nfo_only = [r for r in rows if r["exchange"] == "NFO"]
    nfo_only = nfo_only[:-1]  # one NFO contract vanished
    report = sync(tmp_path, nfo_only, name="nfo.csv")
    assert report.scope == ["NFO"]
    assert report.delisted == 1
    assert listed(exchange="NSE").count() == 5
    assert listed(exchange="MCX").count() == 1


def test_shrink_guard_refuses_a_far_smaller_dump_and_changes_nothing(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    before = snapshot()
    with pytest.raises(ShrinkRefused, match="--force"):
        sync(tmp_path, rows[:10])
    assert snapshot() == before
    assert SyncRun.objects.latest("started_at").status == "refused"

    forced = sync(tmp_path, rows[:10], force=True)
    assert forced.status == "ok" and forced.delisted == 29 - 10


def test_refusals_leave_every_table_as_it_was(tmp_path):
    sync(tmp_path, nifty_universe())
    before = snapshot()
    for name, data in [
        ("html.csv", b"<html><body>Service unavailable</body></html>"),
        ("empty.csv", b""),
        ("wrong.csv", b"a,b,c\n1,2,3\n"),
        ("allbad.csv", kite_csv([kite_row(5, "X", price="abc")])),
    ]:
        path = write(tmp_path / name, data)
        with pytest.raises(BadInput):
            instrument_sync(source="kite", path=path)
        assert snapshot() == before
    with pytest.raises(SourceUnreachable):
        instrument_sync(source="kite", path=str(tmp_path / "missing.csv"))
    assert snapshot() == before
    statuses = list(SyncRun.objects.order_by("id").values_list("status", flat=True))
    assert statuses == ["ok", "failed", "failed", "failed", "failed", "failed"]


def test_dry_run_reports_and_writes_nothing(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    before = snapshot()
    report = sync(tmp_path, rows[:-3] + [kite_row(999_999_001, "NEWCO")], dry_run=True, preset="nifty")
    assert report.status == "dry_run"
    # CDS and MCX left the dump entirely: out of scope, so only the NFO row is delisted.
    assert report.delisted == 1 and report.inserted == 1 and report.activated > 0
    assert snapshot() == before
    assert SyncRun.objects.latest("started_at").status == "dry_run"


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("nifty", {"NIFTY 50", "NIFTY99DECFUT"} | {f"NIFTY99DEC{24000 + i * 50}{k}" for i in range(5) for k in "CP"}),
        ("banknifty", {"NIFTY BANK", "BANKNIFTY99DECFUT"}
                      | {f"BANKNIFTY99DEC{52000 + i * 50}{k}" for i in range(5) for k in "CP"}),
    ],
)  # fmt: skip
def test_presets_make_the_active_set_exactly_the_preset(tmp_path, preset, expected):
    expected = {s if s.endswith(("FUT", "50", "BANK")) else s + "E" for s in expected}
    rows = nifty_universe()
    sync(tmp_path, rows)
    Instrument.objects.filter(tradingsymbol__in=["RELIANCE", "CRUDEOIL99DECFUT"]).update(is_active=True)
    report = sync(tmp_path, rows, preset=preset)
    active = set(Instrument.objects.filter(is_active=True).values_list("tradingsymbol", flat=True))
    assert active == expected
    assert report.deactivated == 3  # RELIANCE on NSE and BSE, CRUDEOIL


def test_filter_all_and_no_filter_leave_active_flags_alone(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    Instrument.objects.filter(tradingsymbol="RELIANCE").update(is_active=True)
    for preset in ("all", None):
        sync(tmp_path, rows, preset=preset)
        assert set(Instrument.objects.filter(is_active=True).values_list("tradingsymbol", flat=True)) == {
            "RELIANCE"
        }


@override_settings(KITE_TICKER_MAX_CONNECTIONS=1, KITE_TICKER_MAX_PER_CONNECTION=5)
def test_a_preset_beyond_the_feed_limit_is_refused(tmp_path):
    rows = nifty_universe()
    sync(tmp_path, rows)
    with pytest.raises(CommandError) as failure:
        call_command("sync_instruments", "--file", write(tmp_path / "d.csv", kite_csv(rows)), "--filter", "nifty",
                     stdout=StringIO())  # fmt: skip
    assert failure.value.returncode == 7
    assert not Instrument.objects.filter(is_active=True).exists()


def test_upstox_rows_keep_their_key_and_carry_no_token(tmp_path):
    import json

    from tests.instruments.test_parsing import UPSTOX_RECORDS

    path = write(tmp_path / "complete.json.gz", json.dumps(UPSTOX_RECORDS).encode(), gz=True)
    report = instrument_sync(source="upstox", path=path)
    assert report.inserted == 5
    reliance = Instrument.objects.get(instrument_key="NSE_EQ|INE002A01018")
    assert reliance.source == "upstox" and reliance.instrument_token is None
    again = instrument_sync(source="upstox", path=path)
    assert again.unchanged == 5 and again.inserted == 0


# --- the command -----------------------------------------------------------------------------


def run_command(*args):
    out = StringIO()
    try:
        call_command("sync_instruments", *args, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def test_command_exit_codes(tmp_path):
    good = write(tmp_path / "good.csv", kite_csv(nifty_universe()))
    assert run_command("--file", good)[0] == 0
    html = write(tmp_path / "bad.html", b"<!doctype html><p>login</p>")
    code, message = run_command("--file", html)
    assert code == 3 and "HTML" in message
    small = write(tmp_path / "small.csv", kite_csv(nifty_universe()[:10]))
    code, message = run_command("--file", small)
    assert code == 4 and "--force" in message
    assert run_command("--file", str(tmp_path / "nope.csv"))[0] == 6
    assert run_command("--url", "http://127.0.0.1:9/instruments")[0] == 6


def test_command_summary_and_json(tmp_path):
    import json

    good = write(tmp_path / "good.csv", kite_csv(nifty_universe()) + b"5,1,BAD,,x,,0,0.05,1,EQ,NSE,NSE\n")
    code, text = run_command("--file", good)
    assert code == 0
    assert "inserted 31" in text and "rejected 1" in text
    assert "NFO/NFO-OPT" in text and "line 33: bad last_price 'x'" in text
    code, text = run_command("--file", good, "--json", "--dry-run")
    report = json.loads(text)
    assert report["status"] == "dry_run" and report["unchanged"] == 31
    assert report["before"]["NSE/INDICES"] == {"listed": 2, "active": 0}


@override_settings(KITE_TICKER_MAX_CONNECTIONS=1, KITE_TICKER_MAX_PER_CONNECTION=5)
def test_a_refused_run_records_no_writes(tmp_path):
    from instruments.sync.errors import ActivationLimitExceeded

    with pytest.raises(ActivationLimitExceeded) as failure:
        sync(tmp_path, nifty_universe(), preset="nifty")
    run = SyncRun.objects.get()
    assert run.status == "refused" and run.exit_code == 7
    assert (run.inserted, run.delisted, run.activated) == (0, 0, 0)
    assert failure.value.report.inserted == 0
    assert not Instrument.objects.exists()


# --- a token that changes contract loses its latest tick ------------------------------------


def store_ticks(*tokens):
    from ingestion.latest import latest_store

    latest_store({token: f'{{"instrument_token": {token}, "last_price": "1.5"}}' for token in tokens})


def ticked(*tokens):
    from ingestion.latest import latest_ticks

    return set(latest_ticks(list(tokens)))


def option(token, symbol, strike, expiry="2099-12-30", kind="CE"):
    return kite_row(token, symbol, exchange="NFO", segment="NFO-OPT", itype=kind, name="NIFTY", expiry=expiry,
                    strike=strike, lot="75")  # fmt: skip


def test_a_reused_token_drops_the_old_contracts_latest_tick(tmp_path, django_capture_on_commit_callbacks):
    keep = kite_row(738561, "RELIANCE")
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, [option(10_000_002, "NIFTY24DEC24000CE", "24000", expiry="2024-12-26"), keep])
    store_ticks(10_000_002, 738561)
    reused = option(10_000_002, "NIFTY25MAR23000PE", "23000", expiry="2025-03-27", kind="PE")
    with django_capture_on_commit_callbacks(execute=True):
        report = sync(tmp_path, [reused, keep])
    assert report.inserted == 1 and report.delisted == 1
    assert ticked(10_000_002, 738561) == {738561}  # the new contract starts with no price


def test_a_contract_under_a_new_token_drops_both_tokens_ticks(tmp_path, django_capture_on_commit_callbacks):
    keep = kite_row(738561, "RELIANCE")
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, [option(10_000_002, "NIFTY99DEC100CE", "100"), keep])
    store_ticks(10_000_002, 20_000_002, 738561)  # 20_000_002: a stale tick of whatever held it before
    with django_capture_on_commit_callbacks(execute=True):
        report = sync(tmp_path, [option(20_000_002, "NIFTY99DEC100CE", "100"), keep])
    assert report.updated == 1 and report.inserted == 0
    assert ticked(10_000_002, 20_000_002, 738561) == {738561}


def test_a_delisted_rows_token_given_to_another_contract_drops_its_tick(
    tmp_path, django_capture_on_commit_callbacks
):
    keep = kite_row(738561, "RELIANCE")
    old = option(10_000_002, "NIFTY99DEC100CE", "100")
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, [old, keep])
        sync(tmp_path, [keep], force=True)  # the option is delisted
    store_ticks(10_000_002, 738561)
    with django_capture_on_commit_callbacks(execute=True):
        report = sync(tmp_path, [option(10_000_002, "NIFTY99DEC200CE", "200"), keep])
    assert report.inserted == 1
    assert ticked(10_000_002, 738561) == {738561}


def test_swapped_tokens_and_delisted_rows_drop_their_ticks(tmp_path, django_capture_on_commit_callbacks):
    a, b = option(1_000_002, "NIFTY99DEC100CE", "100"), option(2_000_002, "NIFTY99DEC200CE", "200")
    keep, gone = kite_row(738561, "RELIANCE"), kite_row(3813889, "M&M")
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, [a, b, keep, gone])
    store_ticks(1_000_002, 2_000_002, 738561, 3813889)
    swapped = [option(2_000_002, "NIFTY99DEC100CE", "100"), option(1_000_002, "NIFTY99DEC200CE", "200"), keep]
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, swapped, force=True)
    assert ticked(1_000_002, 2_000_002, 738561, 3813889) == {738561}


def test_an_unchanged_resync_and_a_dry_run_keep_every_tick(tmp_path, django_capture_on_commit_callbacks):
    rows = nifty_universe()
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, rows)
    tokens = [int(r["instrument_token"]) for r in rows]
    store_ticks(*tokens)
    with django_capture_on_commit_callbacks(execute=True):
        sync(tmp_path, rows)
        moved = [{**rows[0], "instrument_token": "999999"}, *rows[1:]]
        sync(tmp_path, moved, dry_run=True)
    assert ticked(*tokens) == set(tokens)
