"""The freeze table: seeded by a migration with the exchanges' published index values,
updated from NSE's file by ``python manage.py freeze_limits`` (the CSV form of
qtyfreeze.xls as NSE and spreadsheets write it; bad rows rejected with their line, the
rest applied in one transaction; exit codes for what a person must fix), and edited in
the admin by staff with its model permissions."""

import gzip
import json
import threading
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from oms.freeze_limits import FreezeFileBad, freeze_file_parse
from oms.models import FreezeLimit
from tests import helpers
from tests.helpers import child_env, manage, serving
from tradingportal.locks import named_lock

pytestmark = pytest.mark.django_db

PUBLISHED = {("NFO", "NIFTY"): 1800, ("NFO", "BANKNIFTY"): 600, ("NFO", "FINNIFTY"): 1800,
             ("NFO", "MIDCPNIFTY"): 2800, ("NFO", "NIFTYNXT50"): 600, ("BFO", "SENSEX"): 1000,
             ("BFO", "BANKEX"): 900}  # fmt: skip

# NSE's file as a spreadsheet saves it: a BOM, CRLF, padded header and symbols, quoted
# thousands, a serial-number column, an integer re-saved as 1800.0, a blank line.
NSE_CSV = (
    "\ufeffSR.NO.,SYMBOL    ,VOL_FRZ_QTY\r\n"
    "1,BANKNIFTY ,900\r\n"
    '2,NIFTY,"1,800"\r\n'
    "3,FINNIFTY,1800.0\r\n"
    "\r\n"
    "4,MIDCPNIFTY,2800\r\n"
    "5,NIFTYNXT50,600\r\n"
    '6,RELIANCE,"12,000"\r\n'
    "7,M&M,8750\r\n"
    "8,BAJAJ-AUTO,1500\r\n"
).encode()


def _limits(exchange="NFO"):
    return dict(FreezeLimit.objects.filter(exchange=exchange).values_list("underlying", "freeze_quantity"))


def _run(*args):
    out = StringIO()
    call_command("freeze_limits", *args, stdout=out)
    return out.getvalue()


def _fails(*args):
    with pytest.raises(CommandError) as failure:
        _run(*args)
    return failure.value


# --- the seed ------------------------------------------------------------------------------------------


def test_the_migration_seeds_the_published_index_freeze_quantities():
    seeded = {
        (row.exchange, row.underlying): row.freeze_quantity
        for row in FreezeLimit.objects.filter(source="seed")
    }
    assert seeded == PUBLISHED


def test_the_seed_keeps_a_desks_own_rows_and_leaves_them_on_the_way_back():
    import importlib

    from django.apps import apps

    seed = importlib.import_module("oms.migrations.0004_live_switch_audit_freeze_limits_seed")
    FreezeLimit.objects.filter(underlying="NIFTY").update(freeze_quantity=1755, source="admin")
    seed.unseed_freeze_limits(apps, None)
    assert dict(FreezeLimit.objects.values_list("underlying", "freeze_quantity")) == {"NIFTY": 1755}
    seed.seed_freeze_limits(apps, None)
    assert _limits()["NIFTY"] == 1755 and FreezeLimit.objects.count() == len(PUBLISHED)


# --- reading NSE's file --------------------------------------------------------------------------------


def test_nses_file_is_read_as_spreadsheets_save_it():
    rows, rejects = freeze_file_parse(NSE_CSV)
    assert rejects == []
    assert {row.underlying: row.quantity for row in rows} == {
        "BANKNIFTY": 900, "NIFTY": 1800, "FINNIFTY": 1800, "MIDCPNIFTY": 2800, "NIFTYNXT50": 600,
        "RELIANCE": 12000, "M&M": 8750, "BAJAJ-AUTO": 1500}  # fmt: skip
    assert rows[0].line == 2 and rows[3].line == 6  # the blank line counts


def test_title_rows_above_the_header_and_windows_1252_text_are_fine():
    data = (
        "Quantity Freeze Limits – F&O,,\nas on 01-Dec-2026,,\nSYMBOL,VOL_FRZ_QTY,REMARKS\nnifty,1800,index\n"
    )
    rows, _ = freeze_file_parse(data.encode("cp1252"))
    assert [(row.underlying, row.quantity, row.line) for row in rows] == [("NIFTY", 1800, 4)]


def test_bad_rows_are_rejected_with_their_line_and_the_rest_is_read():
    data = (
        b"SYMBOL,VOL_FRZ_QTY\n"
        b"NIFTY,1800\n"
        b"BANKNIFTY,abc\n"
        b"FINNIFTY,0\n"
        b"MIDCPNIFTY,-2800\n"
        b"NIFTYNXT50,600.5\n"
        b",900\n"
        b"NIFTY BANK,900\n"
        b"SENSEX,\n"
        b"NIFTY,1200\n"
        b"RELIANCE,99999999999\n"
        b"TCS,1e3\n"
    )
    rows, rejects = freeze_file_parse(data)
    assert [(row.underlying, row.quantity) for row in rows] == [("NIFTY", 1800), ("TCS", 1000)]
    reasons = {reject["line"]: reject["reason"] for reject in rejects}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "'abc' for BANKNIFTY is not a whole number" in reasons[3]
    assert "no SYMBOL" in reasons[7] and "'NIFTY BANK' is not an underlying" in reasons[8]
    assert "NIFTY again (first on line 2)" in reasons[10]


@pytest.mark.parametrize(
    ("data", "said"),
    [(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500, "Excel .xls file"),
     (b"PK\x03\x04" + b"\x00" * 100, ".xlsx"),
     (b"  <!DOCTYPE html><html><body>Access Denied</body></html>", "HTML page"),
     (b"", "empty"),
     (b"\n \r\n", "empty"),
     (b"SYMBOL,QTY\nNIFTY,1800\n", "no SYMBOL and VOL_FRZ_QTY columns"),
     (b"SYMBOL,VOL_FRZ_QTY\nNIFTY,zero\n", "no valid row (1 rejected)"),
     (b"SYMBOL,VOL_FRZ_QTY\n", "no valid row (0 rejected)"),
     (b"\xff\xfe\x00\x81\x8d\x8f\x90\x9d", "not text")],
)  # fmt: skip
def test_what_is_not_the_freeze_file_is_refused_saying_what_it_is(data, said):
    with pytest.raises(FreezeFileBad, match=said.replace("(", r"\(").replace(")", r"\)")):
        freeze_file_parse(data)


def test_the_xls_refusal_says_what_to_do():
    with pytest.raises(FreezeFileBad) as refused:
        freeze_file_parse(b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    assert "xlrd" in str(refused.value) and "save it as CSV" in str(refused.value)


# --- the command ---------------------------------------------------------------------------------------


def test_an_update_inserts_updates_and_keeps_what_the_file_does_not_name(tmp_path):
    path = tmp_path / "qtyfreeze.csv"
    path.write_bytes(NSE_CSV)
    out = _run("--file", str(path))
    limits = _limits()
    assert limits["BANKNIFTY"] == 900 and limits["RELIANCE"] == 12000 and limits["M&M"] == 8750
    assert _limits("BFO") == {"SENSEX": 1000, "BANKEX": 900}  # another exchange: untouched
    assert FreezeLimit.objects.get(exchange="NFO", underlying="BANKNIFTY").source == "file"
    assert FreezeLimit.objects.get(exchange="NFO", underlying="NIFTY").source == "seed"  # unchanged
    assert "rows read 8: inserted 3, updated 1, unchanged 4, rejected 0" in out
    assert "BANKNIFTY" in out and "600 -> 900" in out and "RELIANCE" in out and "new -> 12000" in out

    path.write_bytes(b"SYMBOL,VOL_FRZ_QTY\nNIFTY,1755\nBANKNIFTY,x\n")
    out = _run("--file", str(path))
    assert "rows read 2: inserted 0, updated 1, unchanged 0, rejected 1" in out
    assert "in the table but not in the file (kept) 7" in out and "line 3:" in out
    assert _limits()["NIFTY"] == 1755 and _limits()["BANKNIFTY"] == 900


def test_a_dry_run_reports_and_writes_nothing(tmp_path):
    path = tmp_path / "qtyfreeze.csv"
    path.write_bytes(NSE_CSV)
    before = list(FreezeLimit.objects.order_by("pk").values())
    out = _run("--file", str(path), "--dry-run")
    assert "dry run: nothing was written" in out and "inserted 3, updated 1" in out
    assert list(FreezeLimit.objects.order_by("pk").values()) == before


def test_json_report_and_a_gzipped_file_for_bse(tmp_path):
    path = tmp_path / "bse.csv.gz"
    path.write_bytes(gzip.compress(b"SYMBOL,VOL_FRZ_QTY\nSENSEX,1200\nSENSEX50,1800\n"))
    report = json.loads(_run("--file", str(path), "--exchange", "BFO", "--json"))
    assert (report["exchange"], report["inserted"], report["updated"], report["unchanged"]) == (
        "BFO",
        1,
        1,
        0,
    )
    assert report["changes"] == [{"underlying": "SENSEX", "old": 1000, "new": 1200},
                                 {"underlying": "SENSEX50", "old": None, "new": 1800}]  # fmt: skip
    assert _limits("BFO") == {"SENSEX": 1200, "SENSEX50": 1800, "BANKEX": 900}
    assert _limits()["NIFTY"] == 1800  # NFO untouched


def test_a_first_load_lists_the_first_changes_and_counts_the_rest(tmp_path):
    path = tmp_path / "qtyfreeze.csv"
    path.write_text("SYMBOL,VOL_FRZ_QTY\n" + "".join(f"STOCK{i},{1000 + i}\n" for i in range(30)))
    every = _run("--file", str(path), "--dry-run", "-v", "2")
    assert "STOCK29" in every and "more" not in every
    out = _run("--file", str(path))
    assert "inserted 30" in out and "STOCK19" in out and "STOCK20" not in out
    assert "... and 10 more (-v 2 lists them all)" in out


def test_from_a_url(tmp_path):
    with serving({"/content/fo/qtyfreeze.csv": NSE_CSV, "/gone.csv": (404, b"not here"),
                  "/page": b"<html>Resource not available</html>"}) as base:  # fmt: skip
        _run("--url", f"{base}/content/fo/qtyfreeze.csv")
        assert _limits()["BANKNIFTY"] == 900
        gone = _fails("--url", f"{base}/gone.csv")
        assert gone.returncode == 6 and "answered HTTP 404" in str(gone)
        page = _fails("--url", f"{base}/page")
        assert page.returncode == 3 and "HTML page" in str(page)


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [(["--file", "/nonexistent/qtyfreeze.csv"], 6, "cannot read /nonexistent/qtyfreeze.csv"),
     (["--url", "http://127.0.0.1:9/qtyfreeze.csv"], 6, "cannot reach"),
     (["--file", "{xls}"], 3, "Excel .xls file"),
     (["--file", "{gz}"], 3, "gzip stream")],
)  # fmt: skip
def test_failures_have_their_exit_code_and_change_nothing(tmp_path, args, code, said):
    (tmp_path / "qtyfreeze.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100)
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(NSE_CSV)[:40])
    args = [arg.format(xls=tmp_path / "qtyfreeze.xls", gz=tmp_path / "broken.csv.gz") for arg in args]
    before = list(FreezeLimit.objects.order_by("pk").values())
    failure = _fails(*args)
    assert failure.returncode == code and said in str(failure)
    assert list(FreezeLimit.objects.order_by("pk").values()) == before


def test_one_update_at_a_time(tmp_path):
    path = tmp_path / "qtyfreeze.csv"
    path.write_bytes(NSE_CSV)
    held, release = threading.Event(), threading.Event()

    def other_update():
        try:
            with named_lock("freeze_limits"):  # on its own connection, as another process would
                held.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    thread = threading.Thread(target=other_update)
    thread.start()
    try:
        assert held.wait(timeout=30)
        locked = _fails("--file", str(path))
        assert locked.returncode == 5 and "another freeze_limits update is running" in str(locked)
    finally:
        release.set()
        thread.join(timeout=30)
    assert _limits()["BANKNIFTY"] == 600
    _run("--file", str(path))
    assert _limits()["BANKNIFTY"] == 900


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)  # the child reads the test database: no transaction held open
def test_exit_codes_at_a_shell(tmp_path):
    """As a person or cron runs it: argparse's 2 for bad usage, 3 for an .xls, 0 for the CSV."""
    env = child_env(DATABASE_URL=helpers.test_database_url())
    usage = manage("freeze_limits", env=env)
    assert usage.returncode == 2 and "one of the arguments --file --url is required" in usage.stderr
    (tmp_path / "qtyfreeze.xls").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    xls = manage("freeze_limits", "--file", str(tmp_path / "qtyfreeze.xls"), "--dry-run", env=env)
    assert xls.returncode == 3 and "save it as CSV" in xls.stderr
    (tmp_path / "qtyfreeze.csv").write_bytes(NSE_CSV)
    ok = manage("freeze_limits", "--file", str(tmp_path / "qtyfreeze.csv"), "--dry-run", env=env)
    assert ok.returncode == 0 and "dry run: nothing was written" in ok.stdout


# --- the admin -----------------------------------------------------------------------------------------


@pytest.fixture
def desk(django_user_model):
    """Staff who may view the freeze table only."""
    user = django_user_model.objects.create_user(username="desk", password="desk-pass-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_freezelimit"))
    return user


def test_the_freeze_table_is_edited_by_staff_with_its_permissions(client, desk):
    nifty = FreezeLimit.objects.get(exchange="NFO", underlying="NIFTY")
    client.force_login(desk)
    assert client.get("/admin/oms/freezelimit/").status_code == 200
    assert client.get("/admin/oms/freezelimit/add/").status_code == 403
    refused = client.post(f"/admin/oms/freezelimit/{nifty.pk}/change/",
                          {"exchange": "NFO", "underlying": "NIFTY", "freeze_quantity": "1"})  # fmt: skip
    assert refused.status_code == 403
    nifty.refresh_from_db()
    assert nifty.freeze_quantity == 1800

    desk.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_freezelimit", "change_freezelimit"])
    )
    client.force_login(desk)
    changed = client.post(f"/admin/oms/freezelimit/{nifty.pk}/change/",
                          {"exchange": "NFO", "underlying": "nifty", "freeze_quantity": "1755"})  # fmt: skip
    assert changed.status_code == 302
    nifty.refresh_from_db()
    assert (nifty.underlying, nifty.freeze_quantity, nifty.source) == ("NIFTY", 1755, "admin")
    added = client.post(
        "/admin/oms/freezelimit/add/", {"exchange": "NFO", "underlying": " m&m ", "freeze_quantity": "8750"}
    )
    assert added.status_code == 302 and FreezeLimit.objects.get(underlying="M&M").source == "admin"


@pytest.mark.parametrize(
    ("data", "field"),
    [({"underlying": "NIFTY", "freeze_quantity": "900"}, "__all__"),  # a second NIFTY on NFO
     ({"underlying": "NEW", "freeze_quantity": "0"}, "freeze_quantity"),
     ({"underlying": "NEW", "freeze_quantity": "-5"}, "freeze_quantity"),
     ({"underlying": "NEW", "freeze_quantity": "12.5"}, "freeze_quantity"),
     ({"underlying": "NIFTY BANK", "freeze_quantity": "900"}, "underlying"),
     ({"underlying": "NEW", "freeze_quantity": "900", "exchange": "NSE"}, "exchange")],
)  # fmt: skip
def test_the_freeze_form_refuses_nonsense(staff_client, data, field):
    before = FreezeLimit.objects.count()
    response = staff_client.post("/admin/oms/freezelimit/add/", {"exchange": "NFO", **data})
    assert response.status_code == 200 and field in response.context["adminform"].form.errors
    assert FreezeLimit.objects.count() == before
