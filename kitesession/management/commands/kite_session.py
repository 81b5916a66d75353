"""``manage.py kite_session``: the Kite session's state (never the token); ``--logout``."""

import json

from django.core.management.base import BaseCommand, CommandError

from kitesession.crypto import TokenKeyError
from kitesession.services import session_logout
from kitesession.store import BOOTSTRAP, LOGIN_NEEDED, NOT_CONFIGURED, VALID, ist_text, session_state

EXIT_CODES = {
    0: "a usable token: a valid stored session, or the bootstrap token (KITE_ACCESS_TOKEN/_FILE) not refused",
    1: "unexpected error",
    3: "Kite login needed (expired, refused or logged out, and no usable bootstrap token)",
    4: "Kite is not configured (no KITE_API_KEY)",
}
EXIT_HELP = "; ".join(f"{code} {meaning}" for code, meaning in sorted(EXIT_CODES.items()))
STATE_CODES = {VALID: 0, BOOTSTRAP: 0, LOGIN_NEEDED: 3, NOT_CONFIGURED: 4}


class Command(BaseCommand):
    help = (
        "Show the Kite session the portal trades and streams with: state, Kite user, expiry, valid or not "
        f"(never the token). --logout ends it at Kite and here. Exit codes (after --logout too): {EXIT_HELP}."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the state as JSON (for machines).")
        parser.add_argument(
            "--logout",
            action="store_true",
            help="Invalidate the stored session at Kite (invalidate_access_token) and mark it logged out here; "
            "marked here even when Kite cannot be reached (it says so). The bootstrap token is left alone.",
        )

    def handle(self, *args, **options):
        logout = None
        if options["logout"]:
            try:
                logout = session_logout(actor="manage.py kite_session --logout")
            except Exception as exc:  # noqa: BLE001 - say what failed; nothing else to do
                raise CommandError(f"logout failed: {type(exc).__name__}: {exc}", returncode=1) from exc
        try:
            state = session_state()
        except TokenKeyError as exc:  # pragma: no cover - session_state reports key problems itself
            raise CommandError(str(exc), returncode=1) from exc
        if options["json"]:
            body = {**state.as_dict(), "valid": state.state == VALID, "usable": state.usable}
            if logout is not None:
                body["logout"] = {
                    "logged_out": logout.session is not None, "at_kite": logout.at_kite, "detail": logout.detail
                }  # fmt: skip
            self.stdout.write(json.dumps(body, indent=2))
        else:
            if logout is not None:
                self.stdout.write(logout.detail)
            self.stdout.write(f"state:   {state.state}")
            self.stdout.write(f"user:    {state.user_id or '-'}")
            self.stdout.write(f"expires: {ist_text(state.expires_at) if state.expires_at else '-'}")
            self.stdout.write(f"valid:   {'yes' if state.state == VALID else 'no'}")
            self.stdout.write(f"detail:  {state.detail}")
        code = STATE_CODES.get(state.state, 1)
        if code:
            raise CommandError(state.detail, returncode=code)
