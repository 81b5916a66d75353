"""``/kite/login/``, ``/kite/callback/`` and ``/kite/status/``: thin callers of the services.

Anonymous visitors are sent to the admin login; a logged-in user without the Kite login
permission gets 403. A refused login (forged, expired or replayed state, Kite's refusal, a
missing setting) changes nothing and answers a page that says why: 403 for the state, 400
for the rest, 502 when Kite cannot be reached.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from kitesession.permissions import LOGIN_PERMISSION, may_log_in_to_kite
from kitesession.services import LoginRefused, login_start, login_state_check, session_login
from kitesession.store import KiteSessionState, ist_text, session_state

logger = logging.getLogger(__name__)

View = Callable[[HttpRequest], HttpResponse]


def _page(request: HttpRequest, *, heading: str, message: str, status: int = 200,
          state: KiteSessionState | None = None) -> HttpResponse:  # fmt: skip
    context = {
        **admin.site.each_context(request),
        "title": heading,
        "message": message,
        "ok": status == 200,
        "kite_state": state,
        "may_log_in": may_log_in_to_kite(request.user),
    }
    return render(request, "kitesession/result.html", context, status=status)


def _may_log_in(view: View) -> View:
    @functools.wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not may_log_in_to_kite(request.user):
            return _page(
                request, heading="Not allowed", status=403,
                message=f"Logging the desk in to Kite needs a staff account with the permission {LOGIN_PERMISSION} "
                "(\"Can log in to Kite for the desk\"): ask an administrator.",
            )  # fmt: skip
        return view(request)

    return wrapper


@require_GET
@never_cache
@_may_log_in
def kite_login(request: HttpRequest) -> HttpResponse:
    """Send the user to Kite's login page with a state for the way back."""
    try:
        url = login_start(session=request.session, user_pk=request.user.pk)
    except LoginRefused as exc:
        logger.warning("Kite login not started for %s: %s", request.user.get_username(), exc.reason)
        return _page(request, heading="Kite login not possible", message=exc.reason, status=exc.status)
    logger.info("Kite login started by %s", request.user.get_username())
    return HttpResponseRedirect(url)


@require_GET
@never_cache
@_may_log_in
def kite_callback(request: HttpRequest) -> HttpResponse:
    """Kite's redirect after the login: check the state, exchange the request token, store it."""
    query = request.GET
    actor = request.user.get_username()
    try:
        login_state_check(session=request.session, user_pk=request.user.pk, state=query.get("state", ""))
        status, action = query.get("status", ""), query.get("action", "login")
        if status != "success" or action != "login":
            raise LoginRefused(
                f"Kite did not complete the login (status {status[:30]!r}): nothing was changed. "
                "Start the login again."
            )
        state = session_login(request_token=query.get("request_token", ""), actor=actor)
    except LoginRefused as exc:
        logger.warning("Kite callback refused for %s (HTTP %s): %s", actor, exc.status, exc.reason)
        return _page(request, heading="Kite login failed", message=exc.reason, status=exc.status)
    who = state.user_id
    until = f" until {ist_text(state.expires_at)}" if state.expires_at else ""
    return _page(
        request, heading="Logged in to Kite", state=state,
        message=f"{who} is logged in to Kite{until}. The feed and the Kite broker use this session from now on.",
    )  # fmt: skip


@require_GET
@never_cache
@login_required
def kite_status(request: HttpRequest) -> JsonResponse:
    """The session's state for the dashboard (never the token); ``login_url`` for those who may log in."""
    body = session_state(with_version=False).as_dict()
    body.pop("version")
    body["login_url"] = reverse("kite-login") if may_log_in_to_kite(request.user) else None
    return JsonResponse(body)
