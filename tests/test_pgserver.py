"""The private PostgreSQL server (issue 17, item 6): durable by default, a password kept out of every URL, fast
for the tests."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from autograder import gradebook, pgserver
from autograder.course import ROOT, gradebook_url
from tests.postgres import durable_folder, postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(bool(pgserver.missing()), reason=pgserver.missing() or "")


def _setting(url: str, name: str) -> str:
    with sa.create_engine(url).connect() as conn:
        return conn.execute(sa.text(f"SHOW {name}")).scalar_one()


def test_a_course_server_is_durable_and_asks_for_its_password(monkeypatch):
    folder = durable_folder(f"pg-{uuid.uuid4().hex[:8]}")
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.pgserver", "start", "--dir", str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        lines = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines())
        password = (folder / "password").read_text().strip()
        assert password and password not in proc.stdout  # the URL names the file, never the password
        assert stat.S_IMODE((folder / "password").stat().st_mode) == 0o600
        assert lines["GENLAB_GRADEBOOK_PASSWORD_FILE"] == str((folder / "password").resolve())
        assert gradebook.reachable(lines["GENLAB_GRADEBOOK"], timeout_s=5) is not None  # no password: refused
        monkeypatch.setenv("GENLAB_GRADEBOOK", lines["GENLAB_GRADEBOOK"])
        monkeypatch.setenv("GENLAB_GRADEBOOK_PASSWORD_FILE", lines["GENLAB_GRADEBOOK_PASSWORD_FILE"])
        url = gradebook_url()
        assert gradebook.reachable(url) is None
        assert [_setting(url, name) for name in ("fsync", "synchronous_commit", "full_page_writes")] == ["on"] * 3
    finally:
        pgserver.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_course_server_is_refused_in_a_temporary_folder(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "autograder.pgserver", "start", "--dir", str(tmp_path / "pg")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "temporary folder" in proc.stderr and "--fast" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pg").exists()


def test_the_test_server_is_fast(postgres):  # noqa: F811
    assert _setting(postgres.url, "fsync") == "off"
