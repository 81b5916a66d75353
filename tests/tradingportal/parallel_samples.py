"""Sample tests for tests/tradingportal/test_parallel.py (not collected by itself: its name
does not start with ``test_``). Run with pytest-xdist's ``--dist each``, every worker runs
them and writes down, in ``PARALLEL_SAMPLES_OUT``, what it and a process it starts use."""

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.cache import caches

from tests.helpers import child_env, run_python

CHILD = """
import json, django
django.setup()
from django.conf import settings
from django.core.cache import caches
print(json.dumps({"worker_cache": settings.CACHES["worker"]["LOCATION"], "seen": caches["worker"].get("seen")}))
"""


def test_what_this_worker_uses():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    caches[settings.WORKER_CACHE].set("seen", worker, timeout=600)
    child = run_python(CHILD, env=child_env())
    assert child.returncode == 0, child.stderr
    seen = {
        "worker_cache": settings.CACHES["worker"]["LOCATION"],
        "database": settings.DATABASES["default"]["TEST"]["NAME"],
        "child": json.loads(child.stdout),
    }
    (Path(os.environ["PARALLEL_SAMPLES_OUT"]) / f"{worker}.json").write_text(json.dumps(seen))
