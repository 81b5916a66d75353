import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

FLAGS = ("is_staff", "is_superuser", "is_active")


class Command(BaseCommand):
    help = (
        "Make sure a local admin login exists. User from PORTAL_ADMIN_USER (default 'admin'); "
        "password from PORTAL_ADMIN_PASSWORD (checked against the password validators), or "
        "generated and printed once when the user is created. An existing user keeps its password "
        "unless PORTAL_ADMIN_PASSWORD is set; its staff, superuser and active flags are repaired."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Say what would happen; change nothing.")

    def handle(self, *args, **options):
        username = os.environ.get("PORTAL_ADMIN_USER", "admin").strip()
        password = os.environ.get("PORTAL_ADMIN_PASSWORD", "")
        if not username:
            raise CommandError("PORTAL_ADMIN_USER is empty; set a user name or unset it for 'admin'.")
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if password:
            try:
                validate_password(password, user=user or User(username=username))
            except ValidationError as invalid:
                problems = "; ".join(invalid.messages)
                raise CommandError(
                    f"PORTAL_ADMIN_PASSWORD is too weak: {problems}. Choose a stronger one "
                    "(or unset it to generate one); nothing was changed."
                ) from None
        if user is None:
            self._create(User, username, password, dry_run=options["dry_run"])
            return
        changed = [flag for flag in FLAGS if not getattr(user, flag)]
        if password and not user.check_password(password):
            changed.append("password")
        if not changed:
            self.stdout.write(f"Admin user {username!r} exists.")
            return
        if options["dry_run"]:
            self.stdout.write(f"Would update admin user {username!r} ({', '.join(changed)}).")
            return
        for flag in FLAGS:
            setattr(user, flag, True)
        if "password" in changed:
            user.set_password(password)
        user.save(update_fields=[*FLAGS, "password"] if "password" in changed else list(FLAGS))
        self.stdout.write(f"Admin user {username!r} updated ({', '.join(changed)}).")

    def _create(self, User, username: str, password: str, *, dry_run: bool) -> None:
        if dry_run:
            self.stdout.write(f"Would create admin user {username!r}.")
            return
        generated = not password
        password = password or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r}."))
        if generated:
            # Printed once, to the operator's terminal only; never logged.
            self.stdout.write(f"  password: {password}  (set PORTAL_ADMIN_PASSWORD to choose one)")
