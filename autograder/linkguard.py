"""Keep nbgrader's own steps, which run as root, from following links out of a course folder.

nbgrader copies a submission's files with ``shutil.copy`` (which follows symlinks) and chmods
what it wrote with ``os.chmod`` (which does too); ``generate_feedback`` copies the autograded
folder into the student's feedback. :func:`install` makes those steps refuse a folder that holds
a link or a special file, before they copy, write or chmod anything, and say which entry it is.
``nbgrader_config.py`` installs it, so the plain nbgrader commands are guarded too.
"""

from __future__ import annotations

import functools
from pathlib import Path

from nbgrader.converters.base import BaseConverter, NbGraderException

from autograder.intake import unsafe_entries


def refuse_links(folder: str | Path) -> None:
    """Raise NbGraderException if ``folder`` holds a symlink, a hard link or a special file."""
    folder = Path(folder)
    if folder.is_symlink():
        raise NbGraderException(f"{folder} is a symbolic link; refusing to grade through it")
    if folder.is_dir():
        bad = unsafe_entries(folder)
        if bad:
            names = ", ".join(str(p.relative_to(folder)) for p in bad[:5])
            raise NbGraderException(
                f"{folder} holds links or special files ({names}); remove them (python -m autograder.grade "
                "does so at intake) and grade again"
            )


def install() -> None:
    """Guard nbgrader's copying and chmodding steps (idempotent)."""
    if getattr(BaseConverter.init_assignment, "_genlab_guarded", False):
        return
    init_assignment, set_permissions = BaseConverter.init_assignment, BaseConverter.set_permissions

    @functools.wraps(init_assignment)
    def guarded_init(self, assignment_id: str, student_id: str) -> None:
        refuse_links(self._format_source(assignment_id, student_id))
        refuse_links(self._format_dest(assignment_id, student_id))
        init_assignment(self, assignment_id, student_id)

    @functools.wraps(set_permissions)
    def guarded_permissions(self, assignment_id: str, student_id: str) -> None:
        refuse_links(self._format_dest(assignment_id, student_id))
        set_permissions(self, assignment_id, student_id)

    guarded_init._genlab_guarded = True  # type: ignore[attr-defined]
    BaseConverter.init_assignment = guarded_init
    BaseConverter.set_permissions = guarded_permissions
