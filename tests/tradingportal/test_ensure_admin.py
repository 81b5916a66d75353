"""`manage.py ensure_admin`: the local admin login `make run` makes sure of."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db

STRONG = "desk-ops-Kestrel-2931"


def ensure_admin(*args: str) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def admin_env(monkeypatch):
    monkeypatch.delenv("PORTAL_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("PORTAL_ADMIN_USER", "deskadmin")
    return monkeypatch


def test_creates_a_superuser_with_a_generated_password_shown_once(admin_env, django_user_model):
    output = ensure_admin()
    user = django_user_model.objects.get(username="deskadmin")
    assert user.is_staff and user.is_superuser and user.is_active
    password = output.split("password: ")[1].split()[0]
    assert user.check_password(password)
    assert "password:" not in ensure_admin()  # only when it was generated, once
    assert user.check_password(password)


def test_creates_with_the_configured_password(admin_env, django_user_model):
    admin_env.setenv("PORTAL_ADMIN_PASSWORD", STRONG)
    output = ensure_admin()
    assert "Created admin user 'deskadmin'" in output and STRONG not in output
    assert django_user_model.objects.get(username="deskadmin").check_password(STRONG)


def test_repairs_the_flags_and_keeps_the_password(admin_env, django_user_model):
    user = django_user_model.objects.create_user(username="deskadmin", password="kept-password-8812")
    user.is_active = False
    user.save()
    output = ensure_admin()
    assert "updated (is_staff, is_superuser, is_active)" in output
    user.refresh_from_db()
    assert user.is_staff and user.is_superuser and user.is_active
    assert user.check_password("kept-password-8812")
    assert "exists" in ensure_admin()


def test_sets_the_password_only_when_configured(admin_env, django_user_model):
    django_user_model.objects.create_superuser(username="deskadmin", email="", password="old-password-7713")
    admin_env.setenv("PORTAL_ADMIN_PASSWORD", STRONG)
    assert "updated (password)" in ensure_admin()
    assert django_user_model.objects.get(username="deskadmin").check_password(STRONG)
    assert "exists" in ensure_admin()  # the same password again changes nothing


def test_dry_run_changes_nothing(admin_env, django_user_model):
    assert "Would create admin user 'deskadmin'" in ensure_admin("--dry-run")
    assert not django_user_model.objects.exists()
    user = django_user_model.objects.create_user(username="deskadmin", password="kept-password-8812")
    admin_env.setenv("PORTAL_ADMIN_PASSWORD", STRONG)
    output = ensure_admin("--dry-run")
    assert "Would update admin user 'deskadmin' (is_staff, is_superuser, password)" in output
    user.refresh_from_db()
    assert not user.is_staff and user.check_password("kept-password-8812")


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("4815162342", "entirely numeric"),
        ("deskadmin1", "too similar to the username"),
    ],
)
def test_refuses_a_weak_password_and_changes_nothing(admin_env, django_user_model, password, reason):
    admin_env.setenv("PORTAL_ADMIN_PASSWORD", password)
    with pytest.raises(CommandError) as refused:
        ensure_admin()
    message = str(refused.value)
    assert "PORTAL_ADMIN_PASSWORD is too weak" in message and reason in message
    assert password not in message
    assert not django_user_model.objects.exists()

    user = django_user_model.objects.create_user(username="deskadmin", password="kept-password-8812")
    with pytest.raises(CommandError):
        ensure_admin()
    user.refresh_from_db()
    assert user.check_password("kept-password-8812") and not user.is_staff


def test_an_empty_user_name_is_refused(admin_env):
    admin_env.setenv("PORTAL_ADMIN_USER", "  ")
    with pytest.raises(CommandError, match="PORTAL_ADMIN_USER is empty"):
        ensure_admin()
