"""The OpenAPI schema and its docs page are for logged-in users only."""

import pytest
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def test_anonymous_api_clients_get_401_for_the_schema(client):
    response = client.get("/api/schema/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_anonymous_visitors_of_the_docs_are_sent_to_log_in(client):
    for url in ("/api/docs/", "/api/docs/?script="):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=/api/docs/")


def test_logged_in_users_get_the_schema_and_the_docs(trader_client):
    schema = trader_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/instruments/" in schema.json()["paths"]
    page = trader_client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>" not in html and "<style>" not in html  # nothing inline: CSP script-src 'self'
    assert 'src="/api/docs/?script="' in html
    script = trader_client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in script.content.decode()


def test_token_clients_get_the_schema(client, plain_user):
    token = Token.objects.create(user=plain_user)
    assert client.get("/api/schema/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
