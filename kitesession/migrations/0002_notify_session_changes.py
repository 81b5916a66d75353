"""PostgreSQL: tell the feed, the broker and every web process when the Kite session changes.

A row trigger NOTIFYs ``kite_session`` (``kitesession.store.SESSION_CHANNEL``) after any
insert, update or delete of a stored session or a refused token, whoever wrote it (a login,
a refusal, the logout command, psql); PostgreSQL delivers it when the transaction commits.
SQLite has no NOTIFY; readers poll ``session_version()`` there.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION kite_session_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('kite_session', TG_OP);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS kite_sessions_changed ON kite_sessions;
CREATE TRIGGER kite_sessions_changed AFTER INSERT OR UPDATE OR DELETE ON kite_sessions
FOR EACH ROW EXECUTE FUNCTION kite_session_notify();

DROP TRIGGER IF EXISTS kite_refused_tokens_changed ON kite_refused_tokens;
CREATE TRIGGER kite_refused_tokens_changed AFTER INSERT OR UPDATE OR DELETE ON kite_refused_tokens
FOR EACH ROW EXECUTE FUNCTION kite_session_notify();
"""

DROP = """
DROP TRIGGER IF EXISTS kite_sessions_changed ON kite_sessions;
DROP TRIGGER IF EXISTS kite_refused_tokens_changed ON kite_refused_tokens;
DROP FUNCTION IF EXISTS kite_session_notify();
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("kitesession", "0001_sessions")]
    operations = [migrations.RunPython(create, drop)]
