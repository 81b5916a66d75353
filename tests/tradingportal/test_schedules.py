import pytest
from django.test import override_settings
from django_q.models import Schedule

from tradingportal.schedules import IST, schedules_register

pytestmark = pytest.mark.django_db


def test_schedules_are_registered_once_and_corrected():
    # migrate registered them already (post_migrate); registering again changes nothing.
    names = set(Schedule.objects.values_list("name", flat=True))
    assert {"instruments: daily sync", "instruments: deactivate expired"} <= names
    assert set(schedules_register().values()) == {"unchanged"}
    assert Schedule.objects.filter(name="instruments: daily sync").count() == 1
    sync = Schedule.objects.get(name="instruments: daily sync")
    assert sync.schedule_type == Schedule.DAILY
    assert sync.func == "instruments.tasks.sync_instruments_task"
    assert sync.next_run.astimezone(IST).strftime("%H:%M") == "08:45"

    with override_settings(SYNC_DAILY_AT="07:15"):
        assert schedules_register()["instruments: daily sync"] == "updated"
    assert (
        Schedule.objects.get(name="instruments: daily sync").next_run.astimezone(IST).strftime("%H:%M")
        == "07:15"
    )


def test_duplicates_are_removed():
    original = Schedule.objects.get(name="instruments: daily sync")
    Schedule.objects.create(name="x", func=original.func)
    Schedule.objects.filter(name="x").update(name="instruments: daily sync")
    schedules_register()
    assert Schedule.objects.filter(name="instruments: daily sync").count() == 1


def run_as_the_cluster_would(name: str):
    """Run a registered schedule's task the way django-q2's scheduler and a worker do: its
    func and literal kwargs from the Schedule row, through ``async_task(..., sync=True)``;
    returns the saved Task."""
    import ast

    from django_q.models import Task
    from django_q.tasks import async_task

    schedule = Schedule.objects.get(name=name)
    kwargs = ast.literal_eval(schedule.kwargs) if schedule.kwargs else {}
    task_id = async_task(schedule.func, sync=True, **kwargs)
    return Task.objects.get(id=task_id)


def test_the_daily_sync_task_syncs_from_the_configured_dump():
    from instruments.models import Instrument, SyncRun
    from tests.helpers import serving
    from tests.instruments.dumps import kite_csv, nifty_universe

    with (
        serving({"/instruments": kite_csv(nifty_universe())}) as base,
        override_settings(KITE_INSTRUMENTS_URL=base + "/instruments"),
    ):
        task = run_as_the_cluster_would("instruments: daily sync")
    assert task.success, task.result
    assert task.result["status"] == "ok" and task.result["inserted"] == len(nifty_universe())
    run = SyncRun.objects.get()
    assert run.status == "ok" and run.triggered_by == "schedule"
    assert Instrument.objects.count() == len(nifty_universe())


def test_the_daily_sync_task_records_an_unreachable_source():
    from instruments.models import SyncRun
    from tests.helpers import serving

    with serving({}) as base, override_settings(KITE_INSTRUMENTS_URL=base + "/instruments"):
        task = run_as_the_cluster_would("instruments: daily sync")
    assert task.result["status"] == "failed" and task.result["exit_code"] == 6
    assert SyncRun.objects.get().status == "failed"


def test_the_deactivate_expired_task_runs_as_scheduled():
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import NiftyOptionFactory

    today = timezone.localdate()
    expired = NiftyOptionFactory(is_active=True, expiry=today - timedelta(days=3))
    current = NiftyOptionFactory(is_active=True, expiry=today + timedelta(days=30))
    task = run_as_the_cluster_would("instruments: deactivate expired")
    assert task.success, task.result
    expired.refresh_from_db()
    current.refresh_from_db()
    assert not expired.is_active and current.is_active


def test_the_risk_monitor_backstop_marks_positions_as_scheduled():
    import json
    from decimal import Decimal

    from ingestion.latest import latest_store
    from oms.models import Position
    from oms.risk import OrderRequest
    from oms.services import order_place
    from tests.factories import InstrumentFactory

    stock = InstrumentFactory(is_active=True)
    token = stock.instrument_token
    latest_store({token: json.dumps({"instrument_token": token, "last_price": "100.00"})})
    order_place(request=OrderRequest(transaction_type="BUY", quantity=2, product="MIS", order_type="MARKET"),
                user=None, idempotency_key="backstop", instrument_token=token)  # fmt: skip
    latest_store({token: json.dumps({"instrument_token": token, "last_price": "103.00"})})
    task = run_as_the_cluster_would("oms: risk monitor")
    assert task.success, task.result
    assert task.result["marked"] == 1
    assert Position.objects.get(instrument=stock).unrealised == Decimal("6.00")


# --- manage.py register_schedules -------------------------------------------------------


def register_schedules(*args: str) -> str:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("register_schedules", *args, stdout=out)
    return out.getvalue()


def test_register_schedules_creates_what_is_missing():
    Schedule.objects.all().delete()
    output = register_schedules()
    assert "instruments: daily sync: created" in output
    assert "instruments: deactivate expired: created" in output
    assert {"instruments: daily sync", "instruments: deactivate expired"} <= set(
        Schedule.objects.values_list("name", flat=True)
    )
    again = register_schedules()
    assert "instruments: daily sync: unchanged" in again and "0 changed" in again


def test_register_schedules_corrects_a_changed_schedule():
    Schedule.objects.filter(name="instruments: daily sync").update(func="somewhere.else")
    output = register_schedules()
    assert "instruments: daily sync: updated" in output and "1 changed" in output
    assert (
        Schedule.objects.get(name="instruments: daily sync").func == "instruments.tasks.sync_instruments_task"
    )


def test_register_schedules_dry_run_writes_nothing():
    Schedule.objects.filter(name="instruments: deactivate expired").delete()
    Schedule.objects.filter(name="instruments: daily sync").update(func="somewhere.else")
    before = list(Schedule.objects.order_by("id").values())
    output = register_schedules("--dry-run")
    assert "instruments: deactivate expired: would be created" in output
    assert "instruments: daily sync: would be updated" in output
    assert "dry run: nothing written" in output
    assert list(Schedule.objects.order_by("id").values()) == before


def test_register_schedules_explains_a_bad_time_setting():
    from django.core.management import CommandError

    with override_settings(SYNC_DAILY_AT="25:00"), pytest.raises(CommandError, match="SYNC_DAILY_AT='25:00'"):
        register_schedules()


def test_a_named_cluster_gets_the_schedules(monkeypatch):
    """django-q2 runs schedules without a cluster only in a cluster keeping its default name: a
    cluster named by Q_CLUSTER_NAME would never run them, so they are registered for it."""
    from django_q.conf import Conf

    assert set(Schedule.objects.values_list("cluster", flat=True)) == {None}
    monkeypatch.setattr(Conf, "CLUSTER_NAME", "desk-two")
    assert set(schedules_register().values()) == {"updated"}
    assert set(Schedule.objects.values_list("cluster", flat=True)) == {"desk-two"}
    monkeypatch.setattr(Conf, "CLUSTER_NAME", Conf.PREFIX)
    assert set(schedules_register().values()) == {"updated"}
    assert set(Schedule.objects.values_list("cluster", flat=True)) == {None}
