"""Who may log the desk in to Kite: an active staff user with ``kitesession.login_kite``."""

from __future__ import annotations

from typing import Any

LOGIN_PERMISSION = "kitesession.login_kite"


def may_log_in_to_kite(user: Any) -> bool:
    return bool(
        getattr(user, "is_authenticated", False) and user.is_active and user.is_staff
        and user.has_perm(LOGIN_PERMISSION)
    )  # fmt: skip
