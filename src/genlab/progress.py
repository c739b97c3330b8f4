"""Progress bars that show in a terminal or notebook and stay quiet in batch runs.

In a terminal the bars are tqdm's text bars on stderr. In a notebook they are plain text too, all
bars of one cell in one output that is updated in place: a bar with ``leave=False`` disappears when
it closes, one with ``leave=True`` stays with its final state. No widget is used, so a saved
notebook (the book, nbviewer, graded feedback) shows what the bars last said, never a widget
frozen at "0%" whose live state was not saved.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.std import tqdm

T = TypeVar("T")


def interactive() -> bool:
    """True when a person is likely watching: a terminal, or a notebook with a front end.

    ``GENLAB_PROGRESS=1`` or ``0`` overrides; grading runs (``NBGRADER_EXECUTION``) are quiet.
    """
    forced = os.environ.get("GENLAB_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    if os.environ.get("NBGRADER_EXECUTION"):
        return False
    if "ipykernel" in sys.modules:
        # A kernel started by nbclient (nbval, jupyter-book, nbconvert) has no front end to draw on.
        return not os.environ.get("GENLAB_BATCH")
    return sys.stderr.isatty()


def _shell() -> Any:
    """The running IPython kernel's shell, or None outside a kernel."""
    if "ipykernel" not in sys.modules:
        return None
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel always brings IPython
        return None
    shell = get_ipython()
    return shell if shell is not None and hasattr(shell, "kernel") else None


class _Board:
    """The one text output in which a notebook cell's bars are drawn, one line per bar."""

    def __init__(self, cell: int):
        self.cell = cell
        self.lines: dict[int, str] = {}
        self.handle = None

    def show(self, key: int, text: str | None) -> None:
        """Set (or, for None, remove) the line of bar ``key`` and redraw."""
        if text is None:
            self.lines.pop(key, None)
        else:
            self.lines[key] = text
        bundle = {"text/plain": "\n".join(self.lines.values())}
        if self.handle is None:
            if not self.lines:
                return
            from IPython.display import display

            self.handle = display(bundle, raw=True, display_id=True)
        else:
            self.handle.update(bundle, raw=True)


_board: _Board | None = None


def _board_for_this_cell(shell: Any) -> _Board:
    global _board
    cell = getattr(shell, "execution_count", 0)
    if _board is None or _board.cell != cell:
        _board = _Board(cell)
    return _board


class NotebookBar(tqdm):
    """A tqdm bar drawn as a line of text in its cell's progress output (see the module's docstring)."""

    def __init__(self, *args, **kwargs):
        self._board = _board_for_this_cell(_shell())
        kwargs["file"] = io.StringIO()  # tqdm's own printing goes nowhere; display() draws
        kwargs.setdefault("mininterval", 0.5)
        kwargs.setdefault("ncols", 90)
        kwargs.setdefault("ascii", False)  # the block characters of a terminal bar; a notebook shows them
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # close() passes msg="" to clear a bar that does not stay.
        self._board.show(id(self), None if msg == "" else (self.__str__() if msg is None else msg))
        return True


def progress(iterable: Iterable[T] | None = None, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable``, disabled when nobody is watching (see :func:`interactive`)."""
    kwargs.setdefault("disable", not interactive())
    kwargs.setdefault("leave", False)
    if not kwargs["disable"] and _shell() is not None:
        return NotebookBar(iterable, **kwargs)
    return tqdm(iterable, **kwargs)
