"""Alerts in the admin: read-only, the outcome and error of each channel, filters by kind
and outcome, "Send again" behind its permission, no bot token on any page, and a list
that costs the same queries for 5 alerts as for 50."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, Kind, Outcome
from alerts.services import alert_raise, alert_send
from tests.alerts.conftest import TOKEN

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:alerts_alert_changelist")


def raised(key="order:41", kind=Kind.ORDER_REJECTED, **overrides):
    fields = {"kind": kind, "key": key, "subject": f"LIVE order REJECTED ({key})", "body": "Insufficient funds.",
              "link": "/admin/oms/order/41/change/"}  # fmt: skip
    fields.update(overrides)
    return alert_raise(**fields)


@pytest.fixture
def outcomes(telegram, mailoutbox):
    """One alert sent everywhere, one whose Telegram failed, one not sent yet."""
    sent = raised(key="order:1")
    alert_send(alert_id=sent.pk)
    telegram.fail(500, "Internal Server Error")
    failed = raised(key="order:2", kind=Kind.KILL_SWITCH)
    alert_send(alert_id=failed.pk)
    pending = raised(key="order:3", kind=Kind.FEED_DOWN)
    return {"sent": sent, "failed": failed, "pending": pending}


def test_alerts_are_read_only_and_show_each_channels_outcome_and_error(staff_client, outcomes):
    page = staff_client.get(CHANGELIST).content.decode()
    assert "LIVE order REJECTED (order:2)" in page
    assert '<strong title="Telegram answered HTTP 500: Internal Server Error">failed</strong>' in page
    assert staff_client.get(reverse("admin:alerts_alert_add")).status_code == 403
    change = reverse("admin:alerts_alert_change", args=[outcomes["failed"].pk])
    detail = staff_client.get(change).content.decode()
    assert "Telegram answered HTTP 500: Internal Server Error" in detail
    assert 'href="/admin/oms/order/41/change/"' in detail
    assert 'name="_save"' not in detail
    assert staff_client.post(change, {"subject": "edited"}).status_code == 403
    assert (
        staff_client.post(reverse("admin:alerts_alert_delete", args=[outcomes["failed"].pk])).status_code
        == 403
    )
    assert Alert.objects.get(pk=outcomes["failed"].pk).subject == "LIVE order REJECTED (order:2)"


def test_filters_by_kind_and_outcome(staff_client, outcomes):
    def listed(**query):
        page = staff_client.get(CHANGELIST, query).content.decode()
        return {name for name, alert in outcomes.items() if f"LIVE order REJECTED ({alert.key})" in page}

    assert listed(kind__exact=Kind.KILL_SWITCH) == {"failed"}
    assert listed(outcome="failed") == {"failed"}
    assert listed(outcome="pending") == {"pending"}
    assert listed(outcome="sent") == {"sent"}
    assert listed() == {"sent", "failed", "pending"}
    for bad in ({"kind__exact": "kill\x00"}, {"outcome": "nonsense"}, {"q": "x\x00"}):
        assert staff_client.get(CHANGELIST, bad).status_code in (200, 302)


def test_the_bot_token_is_on_no_page(staff_client, outcomes, telegram, settings):
    settings.TELEGRAM_API_URL = "http://127.0.0.1:9"  # unreachable: requests names the URL, token and all
    unreachable = raised(key="order:4")
    alert_send(alert_id=unreachable.pk)
    assert Alert.objects.get(pk=unreachable.pk).telegram_outcome == Outcome.FAILED
    pages = [staff_client.get(CHANGELIST).content.decode()]
    for alert in Alert.objects.all():
        pages.append(staff_client.get(reverse("admin:alerts_alert_change", args=[alert.pk])).content.decode())
    for page in pages:
        assert TOKEN not in page and TOKEN.split(":")[1] not in page
    for alert in Alert.objects.all():
        assert not any(TOKEN in str(value) for value in vars(alert).values())


def test_send_again_needs_its_permission(client, django_user_model, outcomes, enqueued):
    viewer = django_user_model.objects.create_user(
        username="viewer", password="viewer-pass-123", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_alert"))
    client.force_login(viewer)
    page = client.get(CHANGELIST).content.decode()
    assert "LIVE order REJECTED (order:2)" in page and "send_again" not in page
    client.post(CHANGELIST, {"action": "send_again", "_selected_action": [outcomes["failed"].pk]})
    assert enqueued == []
    assert Alert.objects.get(pk=outcomes["failed"].pk).telegram_outcome == Outcome.FAILED


def test_send_again_retries_the_channels_that_did_not_deliver(
    staff_client, outcomes, enqueued, django_capture_on_commit_callbacks, telegram, mailoutbox
):
    telegram.answer = None  # Telegram works again
    selected = [outcomes["failed"].pk, outcomes["sent"].pk]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            CHANGELIST, {"action": "send_again", "_selected_action": selected}, follow=True
        )
    page = response.content.decode()
    assert "1 alert(s) queued to send again." in page
    assert "1 alert(s) already sent on every channel." in page
    assert [task["kwargs"] for task in enqueued] == [{"alert_id": outcomes["failed"].pk}]
    failed = Alert.objects.get(pk=outcomes["failed"].pk)
    assert (failed.telegram_outcome, failed.telegram_error, failed.email_outcome) == ("pending", "", "sent")
    emails_before = len(mailoutbox)
    alert_send(alert_id=failed.pk)  # what the queued task does
    failed.refresh_from_db()
    assert (
        failed.telegram_outcome == Outcome.SENT and len(mailoutbox) == emails_before
    )  # email not sent twice


def test_the_list_costs_the_same_queries_for_many_alerts(staff_client):
    def queries_for_list():
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(CHANGELIST).status_code == 200
        return len(captured)

    now = timezone.now()
    for n in range(5):
        raised(key=f"order:{n}", now=now - timedelta(hours=n))
    few = queries_for_list()
    for n in range(5, 50):
        raised(key=f"order:{n}", now=now - timedelta(hours=n))
    assert queries_for_list() == few
