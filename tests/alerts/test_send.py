"""Sending on the worker: Telegram (a local fake of its Bot API) and email (Django's test
backend); every failure (HTTP 500, no answer, nobody listening, a refused chat, SMTP
down) is recorded on the alert and logged, never with the bot token; each channel is sent
once however often the task runs; failures are tried again later."""

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django_q.tasks import async_task

from alerts.models import Alert, Kind, Outcome, Severity
from alerts.services import alert_raise, alert_send, alerts_retry
from tests.alerts.conftest import CHAT, DESK, TOKEN
from tests.helpers import free_port

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=IST)


def rejected(**overrides):
    fields = {
        "kind": Kind.ORDER_REJECTED,
        "key": "order:41",
        "subject": "LIVE order 41 REJECTED: BUY 10 NSE:RELIANCE (alpha)",
        "body": "Broker's reason: Insufficient funds. Required margin is 24,500.",
        "link": "/admin/oms/order/41/change/",
        "severity": Severity.WARNING,
        "now": T0,
    }
    fields.update(overrides)
    return alert_raise(**fields)


def test_sent_on_telegram_and_by_email(telegram, mailoutbox, settings):
    settings.PORTAL_BASE_URL = "https://desk.example.com"
    alert = rejected()
    sent = alert_send(alert_id=alert.pk)
    [request] = telegram.received
    assert request.path == f"/bot{TOKEN}/sendMessage"
    assert request.body["chat_id"] == CHAT
    text = request.body["text"]
    assert text.startswith("[WARNING] LIVE order 41 REJECTED: BUY 10 NSE:RELIANCE (alpha)")
    assert "Insufficient funds" in text and "https://desk.example.com/admin/oms/order/41/change/" in text
    assert "Raised 02 Mar 10:00:00 IST." in text
    [mail] = mailoutbox
    assert mail.subject == "[warning] LIVE order 41 REJECTED: BUY 10 NSE:RELIANCE (alpha)"
    assert mail.to == DESK and mail.from_email == settings.DEFAULT_FROM_EMAIL
    assert mail.body == text
    row = Alert.objects.get(pk=alert.pk)
    assert (
        (row.telegram_outcome, row.email_outcome)
        == (Outcome.SENT, Outcome.SENT)
        == (
            sent.telegram_outcome,
            sent.email_outcome,
        )
    )
    assert row.telegram_error == row.email_error == ""
    assert row.sent_at is not None and row.attempts == 1 and row.sending_since is None


def test_the_queued_task_runs_on_django_q(telegram, mailoutbox, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alert = rejected()
    [task] = enqueued
    # What a worker does with the package: resolve the function by name and call it.
    async_task(task["func"], *task["args"], sync=True, **task["kwargs"])
    assert len(telegram.received) == 1 and len(mailoutbox) == 1
    assert Alert.objects.get(pk=alert.pk).telegram_outcome == Outcome.SENT


def test_a_channel_not_configured_is_skipped(settings, mailoutbox):
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID, settings.ALERT_EMAILS = "", "", []
    alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert (row.telegram_outcome, row.email_outcome) == (Outcome.SKIPPED, Outcome.SKIPPED)
    assert row.telegram_error == "not configured: TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID not set"
    assert row.email_error == "not configured: ALERT_EMAILS not set"
    assert row.sent_at is None and mailoutbox == []

    settings.TELEGRAM_BOT_TOKEN = TOKEN
    alert_send(alert_id=rejected(key="order:42").pk)
    assert Alert.objects.get(key="order:42").telegram_error == "not configured: TELEGRAM_CHAT_ID not set"


def _assert_no_token(*texts):
    for text in texts:
        assert TOKEN not in text
        assert TOKEN.split(":")[1] not in text  # not even the secret half


def test_a_telegram_server_error_is_recorded_and_logged_without_the_token(telegram, mailoutbox, caplog):
    telegram.fail(500, "Internal Server Error")
    with caplog.at_level(logging.INFO, logger="alerts"):
        alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert row.telegram_outcome == Outcome.FAILED
    assert row.telegram_error == "Telegram answered HTTP 500: Internal Server Error"
    assert (
        row.email_outcome == Outcome.SENT and len(mailoutbox) == 1
    )  # one channel down, the other still goes
    assert f"alert {row.pk} not sent on telegram: Telegram answered HTTP 500" in caplog.text
    _assert_no_token(row.telegram_error, caplog.text)


def test_telegram_not_answering_is_a_failure_after_the_timeout(telegram, settings, caplog):
    settings.ALERT_SEND_TIMEOUT = 0.5
    telegram.hanging = True
    with caplog.at_level(logging.INFO, logger="alerts"):
        alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert (row.telegram_outcome, row.telegram_error) == (
        Outcome.FAILED,
        "Telegram did not answer within 0.5 s",
    )
    assert len(telegram.received) == 1
    _assert_no_token(row.telegram_error, caplog.text)


def test_telegram_unreachable_is_recorded_without_the_token(telegram, settings, caplog):
    settings.TELEGRAM_API_URL = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    with caplog.at_level(logging.INFO, logger="alerts"):
        alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert row.telegram_outcome == Outcome.FAILED
    assert row.telegram_error.startswith("Telegram unreachable: ConnectionError")
    # requests names the URL it could not reach, and the token is in that URL's path.
    assert "/bot********/sendMessage" in row.telegram_error
    _assert_no_token(row.telegram_error, caplog.text)


def test_telegram_refusing_the_message_says_why(telegram):
    telegram.fail(400, "Bad Request: chat not found")
    alert_send(alert_id=rejected().pk)
    assert Alert.objects.get().telegram_error == "Telegram answered HTTP 400: Bad Request: chat not found"
    telegram.fail(429, "Too Many Requests: retry after 7", retry_after=7)
    alert_send(alert_id=rejected(key="order:42").pk)
    assert Alert.objects.get(key="order:42").telegram_error == (
        "Telegram answered HTTP 429: Too Many Requests: retry after 7 (retry after 7 s)"
    )


def test_the_token_is_never_sent_over_plain_http_to_another_host(telegram, settings):
    settings.TELEGRAM_API_URL = "http://api.telegram.org"
    alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert row.telegram_outcome == Outcome.FAILED and "must be https://" in row.telegram_error
    assert telegram.received == []


def test_an_email_server_down_is_recorded(telegram, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nobody listens there
    alert_send(alert_id=rejected().pk)
    row = Alert.objects.get()
    assert row.email_outcome == Outcome.FAILED
    assert row.email_error.startswith("email not sent: ConnectionRefusedError")
    assert row.telegram_outcome == Outcome.SENT


def test_each_channel_is_sent_once_however_often_the_task_runs(telegram, mailoutbox):
    alert = rejected()
    alert_send(alert_id=alert.pk)
    alert_send(alert_id=alert.pk)  # django-q2 delivered the task twice
    assert len(telegram.received) == 1 and len(mailoutbox) == 1
    assert Alert.objects.get().attempts == 2


def test_a_send_under_way_elsewhere_is_left_to_it(telegram, mailoutbox):
    alert = rejected()
    Alert.objects.filter(pk=alert.pk).update(sending_since=T0)
    assert alert_send(alert_id=alert.pk, now=T0 + timedelta(minutes=1)) is None
    assert telegram.received == [] and mailoutbox == []
    # That worker died: after a while the send is taken over.
    assert alert_send(alert_id=alert.pk, now=T0 + timedelta(minutes=6)) is not None
    assert len(telegram.received) == 1 and len(mailoutbox) == 1


def test_failed_channels_are_tried_again_with_a_growing_pause(telegram, mailoutbox, settings):
    settings.ALERT_SEND_ATTEMPTS = 3
    telegram.fail(502, "Bad Gateway")
    alert = rejected()
    alert_send(alert_id=alert.pk, now=T0)
    assert Alert.objects.get().telegram_outcome == Outcome.FAILED and len(mailoutbox) == 1

    assert alerts_retry(now=T0 + timedelta(seconds=30)) == {"tried": 0, "delivered": 0}
    assert alerts_retry(now=T0 + timedelta(seconds=61)) == {"tried": 1, "delivered": 0}  # still failing
    assert Alert.objects.get().attempts == 2
    telegram.answer = None  # Telegram is back
    assert alerts_retry(now=T0 + timedelta(seconds=61 + 90)) == {
        "tried": 0,
        "delivered": 0,
    }  # waits 2 min now
    assert alerts_retry(now=T0 + timedelta(seconds=61 + 121)) == {"tried": 1, "delivered": 1}
    row = Alert.objects.get()
    assert (row.telegram_outcome, row.telegram_error, row.attempts) == (Outcome.SENT, "", 3)
    assert len(mailoutbox) == 1  # email had gone the first time: not sent again
    assert len(telegram.received) == 3


def test_tries_stop_at_the_limit(telegram, settings):
    settings.ALERT_SEND_ATTEMPTS = 2
    telegram.fail(500, "Internal Server Error")
    alert_send(alert_id=rejected().pk, now=T0)
    alerts_retry(now=T0 + timedelta(minutes=2))
    assert alerts_retry(now=T0 + timedelta(hours=1)) == {"tried": 0, "delivered": 0}
    assert Alert.objects.get().attempts == 2 and len(telegram.received) == 2


def test_an_alert_that_was_never_queued_is_sent_by_the_retry(telegram, mailoutbox):
    alert = rejected()  # its task never ran (the queue was down)
    assert alerts_retry(now=T0 + timedelta(seconds=30)) == {"tried": 0, "delivered": 0}
    assert alerts_retry(now=T0 + timedelta(seconds=70)) == {"tried": 1, "delivered": 1}
    assert Alert.objects.get(pk=alert.pk).telegram_outcome == Outcome.SENT and len(mailoutbox) == 1
