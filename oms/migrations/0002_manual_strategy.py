from django.db import migrations


def create_manual(apps, schema_editor):
    Strategy = apps.get_model("oms", "Strategy")
    Strategy.objects.get_or_create(
        name="manual",
        defaults={"mode": "PAPER", "enabled": True, "description": "Orders placed by hand (API or admin)."},
    )


class Migration(migrations.Migration):
    dependencies = [("oms", "0001_initial")]

    operations = [migrations.RunPython(create_manual, migrations.RunPython.noop)]
