"""Student content as inert HTML: the pages the course makes from a submission run nothing and fetch nothing.

Students, instructors and TAs open feedback pages and formgrader's view of a submission, often from
the same Jupyter server where formgrader runs: a script in a student's output would run there with
the instructor's rights. So everything a submission wrote reaches those pages only through here:

* :func:`clean_html` (the maintained sanitiser nh3): formatting, tables, lists and images stay;
  scripts, styles sheets, frames, objects, forms, ``<meta>``, ``<base>``, event handlers, ids
  and every URL but an inline image (``data:image/...``), a web or mail link or an anchor go;
  inline styles keep only colours, alignment and font weight/style;
* :func:`markdown2html` renders Markdown (cells and outputs) and cleans the result;
* :class:`InertOutputs` keeps only the output types a page can show without running code
  (text, HTML, Markdown, LaTeX, PNG, JPEG, SVG as an image) and says what it removed;
* :func:`content_security_policy` is the policy every feedback page carries: no script but the
  page's own MathJax (by hash), no fetch, no frame, no form.

``nbgrader_config.py`` wires these into ``nbgrader generate_feedback`` and into every
``HTMLExporter`` of the course (formgrader renders submissions with one).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import nh3
from jinja2 import pass_context
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor
from nbformat import NotebookNode
from nbformat.v4 import new_output
from traitlets import Bool

# Tags that carry text, tables and images; nh3 removes every other tag (and its attributes).
TAGS = (set(nh3.ALLOWED_TAGS) - {"area", "map"}) | {"tfoot"}
ATTRIBUTES = {
    **{tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items() if tag in TAGS},
    "*": {"class", "title", "style", "lang", "dir"},
    "table": {"border", "cellpadding", "cellspacing"} | set(nh3.ALLOWED_ATTRIBUTES.get("table", ())),
}
# Their text goes too: it is code or CSS, never prose.
DROPPED_WITH_CONTENT = {"script", "style", "noscript", "template", "iframe", "object", "embed", "textarea", "title"}
STYLE_PROPERTIES = {
    "color",
    "background-color",
    "text-align",
    "vertical-align",
    "font-weight",
    "font-style",
    "text-decoration",
    "white-space",
    "padding",
    "border",
    "border-collapse",
}
IMAGE_DATA = re.compile(r"^data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*$")
LINK = re.compile(r"^(https?://|mailto:|#)", re.I)
# What a page may show of an output: these types render without running anything (SVG as an image).
SHOWN = ("text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg", "image/svg+xml")
KEPT_METADATA = ("width", "height", "alt")


def _attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: images only from data, links only to the web, mail or an anchor."""
    if attribute == "src":
        return value if tag == "img" and IMAGE_DATA.match(value) else None
    if attribute in ("href", "cite"):
        return value if LINK.match(value.strip()) else None
    return value


def clean_html(html: Any) -> str:
    """``html`` (a submission's) with nothing left that can run or fetch; see the module doc."""
    return nh3.clean(
        str(html),
        tags=TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ATTRIBUTES,
        attribute_filter=_attribute,
        url_schemes={"http", "https", "mailto", "data"},
        filter_style_properties=STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


@pass_context
def markdown2html(context: Any, source: str) -> str:
    """nbconvert's Markdown rendering (math kept for MathJax, pasted images inline), then :func:`clean_html`."""
    cell = context.get("cell", {})
    attachments = cell.get("attachments", {}) if isinstance(cell, dict) else {}
    renderer = IPythonRenderer(escape=False, attachments=attachments, exclude_anchor_links=True)
    return clean_html(MarkdownWithMath(renderer=renderer).render(str(source)))


def _note(removed: list[str]) -> str:
    kinds = ", ".join(removed)[:200]
    return f"[removed from this page: an output of type {kinds}; pages made from submissions run no code]"


def inert_output(output: NotebookNode) -> NotebookNode:
    """An output reduced to what a page can show without running anything (a note where nothing is left)."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return output
    data = output.get("data") or {}
    kept = {mime: value for mime, value in data.items() if mime in SHOWN and isinstance(value, str)}
    removed = sorted(mime for mime in data if mime not in kept)
    if not kept:
        return new_output("stream", name="stdout", text=_note(removed) + "\n")
    metadata = output.get("metadata") or {}
    output["data"] = kept
    output["metadata"] = {
        mime: {k: v for k, v in meta.items() if k in KEPT_METADATA and isinstance(v, (int, float, str))}
        for mime, meta in metadata.items()
        if mime in kept and isinstance(meta, dict)
    }
    return output


class InertOutputs(Preprocessor):
    """nbconvert step: every output and attachment of the notebook as something a page shows inertly."""

    enabled = Bool(True)  # nbconvert preprocessors skip their work unless enabled

    def preprocess(self, nb: NotebookNode, resources: dict):
        nb.metadata.pop("widgets", None)  # widget state is script input
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int):
        if "outputs" in cell:
            cell.outputs = [inert_output(o) for o in cell.outputs]
        if "attachments" in cell:
            cell.attachments = {
                name: {m: v for m, v in (bundle or {}).items() if m in ("image/png", "image/jpeg")}
                for name, bundle in (cell.attachments or {}).items()
                if isinstance(bundle, dict)
            }
        return cell, resources


def script_hash(text: str) -> str:
    """A CSP hash source for an inline script with exactly this text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(*scripts: str) -> str:
    """The policy of a feedback page: only ``scripts`` (inline, by hash) run; nothing is fetched or framed."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(script_hash(s) for s in scripts),
            "style-src 'unsafe-inline'",
            "img-src data:",
            "font-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-src 'none'",
        ]
    )
