"""Where the course lives: its root folder and its gradebook."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_FILE_ENV = "GENLAB_GRADEBOOK_PASSWORD_FILE"


def gradebook_url(root: Path = ROOT) -> str:
    """``$GENLAB_GRADEBOOK`` (e.g. a PostgreSQL URL), else SQLite in the course root.

    A server's password is never part of ``$GENLAB_GRADEBOOK``: it comes from the file named by
    ``$GENLAB_GRADEBOOK_PASSWORD_FILE`` (filled in here) or from libpq's own ``PGPASSWORD`` /
    ``~/.pgpass``. SQLite tolerates concurrent autograde runs when writers wait for the lock (``timeout``).
    """
    url = os.environ.get("GENLAB_GRADEBOOK")
    if not url:
        return f"sqlite:///{Path(root).resolve() / 'gradebook.db'}?timeout=60"
    password_file = os.environ.get(PASSWORD_FILE_ENV)
    if not password_file:
        return url
    parsed = sa.engine.make_url(url)
    if parsed.password is not None:
        return url
    try:
        password = Path(password_file).read_text().strip()
    except OSError as exc:
        raise ValueError(
            f"cannot read the gradebook's password from {password_file} ({PASSWORD_FILE_ENV}): {exc.strerror}"
        ) from None
    return parsed.set(password=password).render_as_string(hide_password=False)


def safe_url(db_url: str) -> str:
    """A database URL fit for a message or a log: its password replaced by ``***``."""
    try:
        return sa.engine.make_url(db_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return db_url.split("@")[-1]
