"""SyncRun: ``filter`` is called ``preset`` (one name in code; the command flag stays
``--filter``), and each run records where it ran (host, pid) so a run whose process
died can be told apart and closed as abandoned."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("instruments", "0002_trigram_search")]

    operations = [
        migrations.RenameField(model_name="syncrun", old_name="filter", new_name="preset"),
        migrations.AlterField(
            model_name="syncrun",
            name="preset",
            field=models.CharField(
                blank=True, default="", help_text="The active-set preset applied (--filter).", max_length=16
            ),
        ),
        migrations.AddField(
            model_name="syncrun",
            name="host",
            field=models.CharField(blank=True, default="", help_text="Where the sync ran.", max_length=255),
        ),
        migrations.AddField(
            model_name="syncrun",
            name="pid",
            field=models.IntegerField(blank=True, help_text="The process that ran the sync.", null=True),
        ),
    ]
