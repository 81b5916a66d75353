import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Make sure a local admin login exists. User from PORTAL_ADMIN_USER (default 'admin'); "
        "password from PORTAL_ADMIN_PASSWORD, or generated and printed once when the user is "
        "created. An existing user keeps its password unless PORTAL_ADMIN_PASSWORD is set."
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
        if options["dry_run"]:
            self.stdout.write(f"would {'update' if user else 'create'} admin user {username!r}")
            return
        if user is None:
            generated = not password
            password = password or secrets.token_urlsafe(12)
            User.objects.create_superuser(username=username, email="", password=password)
            self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r}."))
            if generated:
                # Printed once, to the operator's terminal only; never logged.
                self.stdout.write(f"  password: {password}  (set PORTAL_ADMIN_PASSWORD to choose one)")
            return
        changed = []
        if password and not user.check_password(password):
            user.set_password(password)
            changed.append("password")
        if not (user.is_staff and user.is_superuser and user.is_active):
            user.is_staff = user.is_superuser = user.is_active = True
            changed += ["is_staff", "is_superuser", "is_active"]
        if changed:
            user.save(update_fields=changed)
            self.stdout.write(f"Admin user {username!r} updated ({', '.join(changed)}).")
        else:
            self.stdout.write(f"Admin user {username!r} exists.")
