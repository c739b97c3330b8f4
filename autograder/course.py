"""Where the course lives: its root folder and its gradebook."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def gradebook_url(root: Path = ROOT) -> str:
    """``$GENLAB_GRADEBOOK`` (e.g. a PostgreSQL URL), else SQLite in the course root.

    SQLite tolerates concurrent autograde runs when writers wait for the lock (``timeout``).
    """
    return os.environ.get("GENLAB_GRADEBOOK") or f"sqlite:///{Path(root).resolve() / 'gradebook.db'}?timeout=60"
