"""A favicon on every page: no more 404 for /favicon.ico."""

import pytest

pytestmark = pytest.mark.django_db

ICON = "/static/tradingportal/favicon.ico"


def test_favicon_ico_redirects_to_the_static_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"] == ICON
    icon = client.get(ICON)
    assert icon.status_code == 200
    body = b"".join(icon.streaming_content) if icon.streaming else icon.content
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert b"\x89PNG" in body


@pytest.mark.parametrize(
    "page", ["/", "/accounts/login/", "/admin/", "/admin/instruments/instrument/", "/api/docs/"]
)
def test_every_page_links_the_icon(staff_user, client, page):
    if page != "/accounts/login/":
        client.force_login(staff_user)
    response = client.get(page)
    assert response.status_code == 200
    assert f'<link rel="icon" href="{ICON}">' in response.content.decode()


def test_the_admin_login_page_links_the_icon(client):
    assert f'<link rel="icon" href="{ICON}">' in client.get("/admin/login/").content.decode()
