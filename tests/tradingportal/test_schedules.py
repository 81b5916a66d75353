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


def test_sync_task_runs_the_service(tmp_path):
    from instruments.models import SyncRun
    from instruments.tasks import sync_instruments_task
    from tests.instruments.dumps import kite_csv, nifty_universe, write

    path = write(tmp_path / "d.csv", kite_csv(nifty_universe()))
    with override_settings(KITE_INSTRUMENTS_URL="http://127.0.0.1:9/instruments"):
        result = sync_instruments_task(source="kite")
    assert result["status"] == "failed" and result["exit_code"] == 6
    from instruments.services import instrument_sync

    instrument_sync(source="kite", path=path, triggered_by="schedule")
    assert SyncRun.objects.filter(status="ok", triggered_by="schedule").count() == 1
