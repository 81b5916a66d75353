import pytest
from django_q.brokers import get_broker
from django_q.signals import pre_enqueue

from tests.alerts.fake_telegram import fake_telegram

# Shaped like a real bot token (digits, a colon, 35 characters).
TOKEN = "7734019255:AAHf4k3-t0ken_for_tests-only-9XyZabc"
CHAT = "-1001234567890"
DESK = ["desk@example.com", "risk@example.com"]


@pytest.fixture
def telegram(settings):
    """A local fake of Telegram's Bot API, and the portal configured to send to it and to
    the desk's addresses (Django's test email backend: ``mailoutbox``)."""
    with fake_telegram() as fake:
        settings.TELEGRAM_API_URL = fake.url
        settings.TELEGRAM_BOT_TOKEN = TOKEN
        settings.TELEGRAM_CHAT_ID = CHAT
        settings.ALERT_EMAILS = DESK
        settings.ALERT_SEND_TIMEOUT = 2.0
        yield fake


@pytest.fixture
def enqueued():
    """Every task package django-q2 queues during the test (as its workers would get it)."""
    tasks: list[dict] = []

    def record(sender, task, **kwargs):
        tasks.append(dict(task))

    pre_enqueue.connect(record, dispatch_uid="tests.alerts.enqueued")
    yield tasks
    pre_enqueue.disconnect(dispatch_uid="tests.alerts.enqueued")
    if tasks:
        get_broker().purge_queue()
