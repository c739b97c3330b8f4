"""Numbers a notebook hands to the book's text, so that the text cannot drift from its outputs.

A given cell computes a value and calls ``glue("name", value)``; the book's Markdown quotes it as
``{glue:text}`name:.2f``` (myst-nb's glue role), filled in from the executed notebook when the book is
built. The value is recorded the way myst-nb's own ``glue(..., display=False)`` records it, without
importing myst-nb (a student's Jupyter need not have it): as a display output under a MIME type no
front end shows, with the name in its metadata.
"""

from __future__ import annotations

from typing import Any

#: The MIME-type prefix of glued values (myst-nb's ``GLUE_PREFIX``).
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` for the book (a plain number, a string or anything IPython can show)."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display

    if hasattr(value, "item") and callable(value.item):  # a 0-dim tensor or numpy scalar: its plain number
        value = value.item()
    bundle, metadata = format_display_data(value)
    metadata["scrapbook"] = {"name": name, "mime_prefix": GLUE_PREFIX}
    display({GLUE_PREFIX + mime: data for mime, data in bundle.items()}, raw=True, metadata=metadata)
