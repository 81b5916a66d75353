"""Where people see the session: the admin header ("Kite login needed" and "Log in to
Kite" for those who may), the dashboard's status line, and the read-only admin of sessions
(never the token)."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from kitesession.models import KiteSession
from kitesession.store import session_save, token_refused

pytestmark = pytest.mark.django_db


def banner(html: str) -> str:
    match = re.search(r'<span id="kite-session"[^>]*>(.*?)</span>', html, re.S)
    assert match, "no Kite session in the page"
    return match[1]


def test_the_admin_header_says_login_needed_with_the_link(staff_client, kite_settings):
    html = staff_client.get("/admin/").content.decode()
    assert "Kite login needed" in banner(html)
    assert 'href="/kite/login/"' in banner(html) and "Log in to Kite" in banner(html)

    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    html = staff_client.get("/admin/").content.decode()
    assert "Kite: AB1234 until" in banner(html) and "06:00 IST" in banner(html)
    assert "Log in to Kite" not in banner(html)

    token_refused(token="stored-secret-token", detail="TokenException", source="ticker", alert=False)
    assert "Kite login needed" in banner(staff_client.get("/admin/").content.decode())


def test_the_link_is_only_for_those_who_may_log_in(client, django_user_model, kite_settings):
    viewer = django_user_model.objects.create_user(
        username="viewer", password="viewer-pass-123", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_kitesession"))
    client.force_login(viewer)
    html = client.get("/admin/").content.decode()
    assert "Kite login needed" in banner(html)
    assert "Log in to Kite" not in banner(html)


def test_nothing_in_the_header_when_kite_is_not_configured(staff_client, kite_settings):
    kite_settings.KITE_API_KEY = ""
    assert 'id="kite-session"' not in staff_client.get("/admin/").content.decode()


def test_the_dashboard_shows_the_session_and_the_link(staff_client, plain_user, kite_settings):
    html = staff_client.get("/").content.decode()
    assert "Kite login needed" in banner(html)
    assert re.search(r'<a id="kite-login" class="kite-login" href="/kite/login/">Log in to Kite</a>', html)
    assert "kitesession/session.js" in html

    session_save(access_token="stored-secret-token", user_id="AB1234", actor="test")
    html = staff_client.get("/").content.decode()
    assert "Kite: AB1234 until" in banner(html)
    assert re.search(r'<a id="kite-login"[^>]* hidden>', html)  # valid: the link is hidden
    assert "stored-secret-token" not in html

    trader = Client()
    trader.force_login(plain_user)
    html = trader.get("/").content.decode()
    assert "Kite: AB1234 until" in banner(html)
    assert re.search(r'<a id="kite-login"[^>]* hidden>', html)


def test_the_session_admin_is_read_only_and_never_shows_the_token(staff_client, kite_settings):
    session_save(access_token="stored-secret-token", user_id="AB1234", actor="operator")
    session = KiteSession.objects.get()
    listing = staff_client.get("/admin/kitesession/kitesession/")
    assert listing.status_code == 200
    assert '<a href="/kite/login/" class="addlink">Log in to Kite</a>' in listing.content.decode()
    assert "AB1234" in listing.content.decode() and "valid" in listing.content.decode()
    page = staff_client.get(f"/admin/kitesession/kitesession/{session.pk}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    for hidden in ("stored-secret-token", session.token_encrypted, session.token_fingerprint):
        assert hidden not in listing.content.decode() and hidden not in text
    assert 'name="_save"' not in text  # nothing to save: read-only
    assert staff_client.get("/admin/kitesession/kitesession/add/").status_code == 403
    assert (
        staff_client.post(f"/admin/kitesession/kitesession/{session.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert KiteSession.objects.filter(pk=session.pk).exists()


def test_the_refused_tokens_admin_shows_no_token(staff_client, kite_settings):
    kite_settings.KITE_ACCESS_TOKEN = "bootstrap-secret-token"
    token_refused(token="bootstrap-secret-token", detail="TokenException", source="ticker", alert=False)
    text = staff_client.get("/admin/kitesession/refusedtoken/").content.decode()
    assert "ticker" in text
    assert "bootstrap-secret-token" not in text
