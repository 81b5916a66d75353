"""``{% kite_session_admin %}`` (the admin header) and ``{% kite_session_dashboard %}`` (the
dashboard's status line): the session's state and, for those who may, "Log in to Kite".
Nothing (and no query) when Kite is not configured."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from kitesession.permissions import may_log_in_to_kite
from kitesession.store import ist_text, session_state

register = template.Library()


def _context(context: template.Context) -> dict[str, Any]:
    if not settings.KITE_API_KEY:
        return {"kite": None}
    state = session_state(with_version=False)
    return {
        "kite": state,
        "until": ist_text(state.expires_at) if state.expires_at else "",
        "may_log_in": may_log_in_to_kite(context.get("user")),
    }


@register.inclusion_tag("kitesession/admin_banner.html", takes_context=True)
def kite_session_admin(context: template.Context) -> dict[str, Any]:
    return _context(context)


@register.inclusion_tag("kitesession/dashboard_status.html", takes_context=True)
def kite_session_dashboard(context: template.Context) -> dict[str, Any]:
    return _context(context)
