"""End to end: an alert raised here is sent by a real django-q2 cluster (`manage.py
qcluster`) to a local fake of Telegram, and a failure shows in the worker's log without
the bot token."""

import sys

import pytest

from alerts.models import Alert, Kind, Outcome
from alerts.services import alert_raise
from tests import helpers
from tests.alerts.conftest import CHAT, TOKEN
from tests.alerts.fake_telegram import fake_telegram
from tests.helpers import child_env, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_worker_sends_alerts_and_logs_failures_without_the_token(tmp_path):
    with fake_telegram() as telegram:
        env = child_env(
            DATABASE_URL=helpers.test_database_url(), TELEGRAM_API_URL=telegram.url, TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=CHAT, ALERT_EMAILS="", Q_WORKERS="1", WORKER_CACHE_DIR=str(tmp_path / "worker"),
            LOG_FORMAT="text",
        )  # fmt: skip
        log = tmp_path / "qcluster.log"
        first = alert_raise(kind=Kind.KILL_SWITCH, key="desk:HALTED:manual", subject="Kill switch HALTED for the desk",
                            body="Reason: testing the worker", link="/admin/oms/killswitchevent/1/change/")  # fmt: skip
        with running([sys.executable, "manage.py", "qcluster"], env, log):
            wait_for(lambda: Alert.objects.get(pk=first.pk).telegram_outcome == Outcome.SENT, timeout=60,
                     what="the worker to send the first alert")  # fmt: skip
            assert [r.body["text"].splitlines()[0] for r in telegram.received] == [
                "[WARNING] Kill switch HALTED for the desk"
            ]
            telegram.fail(500, "Internal Server Error")
            second = alert_raise(
                kind=Kind.FEED_DOWN, key="feed", subject="Market feed down for 2 min", body=""
            )
            wait_for(lambda: Alert.objects.get(pk=second.pk).telegram_outcome == Outcome.FAILED, timeout=60,
                     what="the worker to record the failure")  # fmt: skip
            wait_for(
                lambda: f"alert {second.pk} not sent on telegram" in log.read_text(), what="the log line"
            )
        row = Alert.objects.get(pk=second.pk)
        assert row.telegram_error == "Telegram answered HTTP 500: Internal Server Error"
        assert row.email_outcome == Outcome.SKIPPED
        assert TOKEN not in log.read_text() and TOKEN.split(":")[1] not in log.read_text()
        assert len(telegram.received) == 2
