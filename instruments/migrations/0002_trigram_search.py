"""Trigram indexes and HOT-friendly storage for the admin's and the API's search (PostgreSQL only).

Django's ``icontains``/``istartswith`` on PostgreSQL compare ``UPPER(col::text)``, so the
indexes are on that expression; pg_trgm serves both prefix and fragment searches.
SQLite has no trigram indexes: its searches scan, which is fine at its scale.
"""

from django.db import migrations

COLUMNS = ("tradingsymbol", "name")


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    # Each sync rewrites last_seen_at (and last_price) of every row it sees: leave room
    # on each page so those updates stay HOT (no index maintenance).
    schema_editor.execute("ALTER TABLE instruments SET (fillfactor = 50)")
    for column in COLUMNS:
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS instruments_{column}_trgm "
            f"ON instruments USING gin ((UPPER({column}::text)) gin_trgm_ops)"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS instruments_{column}_trgm")


class Migration(migrations.Migration):
    dependencies = [("instruments", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
