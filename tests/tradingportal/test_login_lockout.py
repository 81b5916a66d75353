"""Brute-force protection on both login pages (django-axes): a user name is paused at one
address after LOGIN_FAILURE_LIMIT wrong passwords; other users and addresses are not."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from axes.models import AccessAttempt
from django.test import AsyncClient, Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "operator-pass-123"
LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]


def attempt(client: Client, page: str, username: str, password: str, address: str = "127.0.0.1"):
    return client.post(page, {"username": username, "password": password, "next": "/"}, REMOTE_ADDR=address)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_thirty_wrong_passwords_then_the_right_one_is_refused(client, staff_user, page, settings):
    for _ in range(30):
        response = attempt(client, page, "operator", "guess")
        assert response.status_code in (200, 429)  # the form again, then the lockout page
    response = attempt(client, page, "operator", PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    assert 0 < int(response["Retry-After"]) <= settings.AXES_COOLOFF_TIME.total_seconds()
    page_text = response.content.decode()
    assert "Too many wrong passwords" in page_text and "operator" in page_text
    # Attempts while locked are refused, not counted: the cool-off runs from the lockout.
    assert AccessAttempt.objects.get().failures_since_start == settings.AXES_FAILURE_LIMIT


def test_the_lockout_starts_at_the_limit(client, staff_user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    assert [attempt(client, "/accounts/login/", "operator", "guess").status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_another_user_and_another_address_are_unaffected(client, staff_user, plain_user):
    for _ in range(30):
        attempt(client, "/admin/login/", "operator", "guess", address="203.0.113.7")
    assert attempt(client, "/admin/login/", "operator", PASSWORD, address="203.0.113.7").status_code == 429

    other_user = Client()
    assert (
        attempt(
            other_user, "/accounts/login/", "trader", "trader-pass-123", address="203.0.113.7"
        ).status_code
        == 302
    )
    assert logged_in(other_user)

    other_address = Client()
    assert (
        attempt(other_address, "/admin/login/", "operator", PASSWORD, address="198.51.100.4").status_code
        == 302
    )
    assert logged_in(other_address)


def test_the_cool_off_ends_the_lockout(client, staff_user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "/accounts/login/", "operator", "guess")
    assert attempt(client, "/accounts/login/", "operator", PASSWORD).status_code == 429
    # As if the cool-off had passed since the last counted failure.
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert attempt(client, "/accounts/login/", "operator", PASSWORD).status_code == 302
    assert logged_in(client)


def test_a_successful_login_forgets_earlier_typos(client, staff_user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "/accounts/login/", "operator", "typo")
    assert attempt(client, "/accounts/login/", "operator", PASSWORD).status_code == 302
    assert not AccessAttempt.objects.exists()
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt(client, "/accounts/login/", "operator", "typo")
    assert attempt(client, "/accounts/login/", "operator", PASSWORD).status_code == 302


def test_an_invented_forwarded_address_does_not_escape_the_lockout(client, staff_user, settings):
    """Without trusted proxies, X-Forwarded-For is the client's own claim: ignored."""
    for n in range(settings.AXES_FAILURE_LIMIT + 3):
        client.post("/accounts/login/", {"username": "operator", "password": "guess"},
                    HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")  # fmt: skip
    response = client.post("/accounts/login/", {"username": "operator", "password": PASSWORD},
                           HTTP_X_FORWARDED_FOR="10.9.9.9")  # fmt: skip
    assert response.status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_address_counts(client, staff_user, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "operator", "password": "guess"},
                    HTTP_X_FORWARDED_FOR="198.51.100.9")  # fmt: skip
    refused = client.post("/accounts/login/", {"username": "operator", "password": PASSWORD},
                          HTTP_X_FORWARDED_FOR="198.51.100.9")  # fmt: skip
    assert refused.status_code == 429
    colleague = Client().post("/accounts/login/", {"username": "operator", "password": PASSWORD},
                              HTTP_X_FORWARDED_FOR="198.51.100.10")  # fmt: skip
    assert colleague.status_code == 302


def test_the_lockout_page_under_asgi(staff_user, settings):
    """uvicorn runs the middleware chain async; django-axes calls the lockout page
    differently there."""
    client = AsyncClient()
    post = async_to_sync(client.post)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        assert post("/accounts/login/", {"username": "operator", "password": "guess"}).status_code in (
            200,
            429,
        )
    response = post("/accounts/login/", {"username": "operator", "password": PASSWORD})
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert "Too many wrong passwords" in response.content.decode()


def test_force_login_still_works(client, staff_user):
    client.force_login(staff_user)
    assert client.get("/").status_code == 200
