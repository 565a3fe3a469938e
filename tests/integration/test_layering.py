"""Importing our modules has no side effects and keeps the layers apart."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def test_given_a_broker_url_when_tasks_and_api_are_imported_then_nothing_connects() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(1.0)
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        script = (
            "from workers.tasks import run_job\n"
            "import api.main\n"
            "sig = run_job.s('some-job-id')\n"
            "print(sig.task)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={"AGENTICORE_REDIS_URL": url, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        with pytest.raises(TimeoutError):
            listener.accept()

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "agenticore.run_job"


def test_given_the_library_when_imported_then_celery_and_fastapi_stay_out() -> None:
    script = (
        "import sys, pkgutil, importlib, agenticore\n"
        "for m in pkgutil.walk_packages(agenticore.__path__, 'agenticore.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "('celery', 'kombu', 'fastapi', 'starlette', 'workers', 'api'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)  # fmt: skip

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
