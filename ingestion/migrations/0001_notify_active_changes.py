"""PostgreSQL: tell the ingestion when the active set may have changed.

A statement-level trigger NOTIFYs ``instruments_active`` after any statement that can
change what streams (``is_active``, ``stream_mode``, ``is_listed`` or the token, inserts
and deletes), whoever ran it: the admin, the API, a sync, or a raw ``UPDATE`` in psql.
One notification per statement, however many rows it touched. SQLite has no NOTIFY; the
ingestion polls there.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION instruments_notify_active() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('instruments_active', TG_OP);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS instruments_active_changed ON instruments;
CREATE TRIGGER instruments_active_changed
AFTER INSERT OR DELETE OR UPDATE OF is_active, stream_mode, is_listed, instrument_token ON instruments
FOR EACH STATEMENT EXECUTE FUNCTION instruments_notify_active();
"""

DROP = """
DROP TRIGGER IF EXISTS instruments_active_changed ON instruments;
DROP FUNCTION IF EXISTS instruments_notify_active();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("instruments", "0002_trigram_search")]
    operations = [migrations.RunPython(create, drop)]
