"""The two editions of a chapter: what the instructor's book and what the student's book show.

Both come from one execution of the source notebook (book/build.py). The **instructor edition** is the
source notebook with its solutions, model answers and outputs, hidden tests removed. The **student
edition** is published on the first day of term, so it holds nothing a student must write or is graded
on: it is the released notebook (``nbgrader generate_assignment``: solutions replaced by ``raise
NotImplementedError()``, model answers by "YOUR ANSWER HERE", hidden tests removed), cell for cell,
with the outputs of the instructor edition's execution only where given code alone computed them.

An output is withheld (:func:`withheld_outputs`) when its cell is a test or an answer cell, when its
cell reads anything an answer cell defines or anything a withheld cell computed (names are followed
through the notebook, functions' bodies included), and when it shows a committed reference run (a
cell tagged ``reference-run``: those runs use genlab's reference implementations). Prose that quotes
a withheld glued value gets a placeholder instead (:func:`unquote_withheld_glue`).
"""

from __future__ import annotations

import ast
import builtins
import copy
import html
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from autograder import notebooks

REFERENCE_TAG = "reference-run"
WITHHELD_NOTE = "*The output of this cell depends on your solutions: run the notebook to see yours.*"
REFERENCE_NOTE = "*A reference run of the chapter's solutions; the instructor edition shows it after the deadline.*"
ANSWER_NOTE = "*Written answer: write yours in the notebook.*"
GLUE_PLACEHOLDER = "*(your value)*"
GLUE_ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`([^`:]+)(?::[^`]*)?`")
GLUE_MIME = "application/papermill.record/"


def kind(cell: NotebookNode) -> str:
    """``answer`` (code to write), ``written`` (a model answer), ``test``, ``given`` (code) or ``prose``."""
    meta = notebooks.meta(cell)
    if cell.cell_type == "code":
        if meta.get("grade") and not meta.get("solution"):
            return "test"
        return "answer" if meta.get("solution") else "given"
    return "written" if meta.get("solution") else "prose"


class _Names(ast.NodeVisitor):
    """The global names a cell reads and binds (imports apart): what flows between cells.

    ``defines`` are the functions and classes it binds: called later, they run whatever their bodies
    name at that time, so their taint reaches back to cells above them.
    """

    def __init__(self) -> None:
        self.reads: set[str] = set()
        self.binds: set[str] = set()
        self.defines: set[str] = set()
        self.imports: set[str] = set()
        # Names the cell may change in place: passed to a call, a method's receiver, or assigned into.
        self.handed: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        (self.reads if isinstance(node.ctx, ast.Load) else self.binds).add(node.id)

    def visit_Call(self, node: ast.Call) -> None:
        receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
        for value in (receiver, *node.args, *(k.value for k in node.keywords)):
            if isinstance(value, ast.Starred):
                value = value.value
            if isinstance(value, ast.Name):
                self.handed.add(value.id)
        self.generic_visit(node)

    def _store_into(self, target: ast.expr) -> None:
        while isinstance(target, (ast.Attribute, ast.Subscript)):
            target = target.value
        if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Load):
            self.handed.add(target.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self._store_into(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._store_into(node.target)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self.imports.add((alias.asname or alias.name).split(".")[0])

    visit_ImportFrom = visit_Import

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.binds.add(node.name)
        self.defines.add(node.name)
        self.generic_visit(node)

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define


def cell_names(source: str) -> _Names | None:
    """What ``source`` reads and binds, or None when it is not plain Python (a magic, say)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names = _Names()
    names.visit(tree)
    return names


def withheld_outputs(nb: NotebookNode) -> dict[str, str]:
    """The cells (by id) whose outputs the student edition withholds, each with the note shown instead."""
    parsed = {cell.id: cell_names(cell.source) for cell in nb.cells if cell.cell_type == "code"}
    # Modules and builtins are no results: a cell that uses torch changes nothing another cell reads there.
    safe = set(dir(builtins)).union(*(names.imports for names in parsed.values() if names is not None))
    # tainted[name] = the first cell index whose reads of ``name`` see something computed from a solution:
    # 0 for what answer cells and withheld cells define (functions run at call time), the next cell for
    # what a withheld cell assigns or may have changed in place (handed to a call, a method called on it,
    # assigned into); reading an attribute (``plan.nz``) changes nothing.
    tainted: dict[str, int] = {}

    def taint(names: Iterable[str], index: int) -> None:
        for name in names:
            tainted[name] = min(index, tainted.get(name, index))

    for cell in nb.cells:
        names = parsed.get(cell.id)
        if kind(cell) == "answer" and names is not None:
            taint(names.binds, 0)
    withheld: dict[str, str] = {}
    changed = True
    while changed:  # a function defined above may come to call one defined below: repeat until stable
        changed = False
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or cell.id in withheld:
                continue
            names = parsed[cell.id]
            if REFERENCE_TAG in cell.metadata.get("tags", []):
                note = REFERENCE_NOTE
            elif kind(cell) != "given" or names is None or any(tainted.get(n, index + 1) <= index for n in names.reads):
                note = WITHHELD_NOTE
            else:
                continue
            withheld[cell.id] = note
            if names is not None:
                taint(names.defines, 0)
                taint(names.binds | (names.handed - safe), index + 1)
            changed = True
    return withheld


def glued_keys(cell: NotebookNode) -> set[str]:
    """The names a code cell's outputs glue (myst-nb's glue, or genlab.glue)."""
    return {
        out.get("metadata", {}).get("scrapbook", {}).get("name")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "display_data" and "scrapbook" in out.get("metadata", {})
    } - {None}


def unquote_withheld_glue(text: str, available: set[str]) -> str:
    """Markdown with every glue role whose value the page does not have replaced by a placeholder."""
    return GLUE_ROLE.sub(lambda m: m.group(0) if m.group(1) in available else GLUE_PLACEHOLDER, text)


def student_chapter(
    released: NotebookNode, executed: NotebookNode, header: str, written_note: str = ANSWER_NOTE
) -> NotebookNode:
    """The student edition of a chapter: ``released`` cell for cell with the outputs it may show.

    ``executed`` is the executed source notebook (or the instructor edition: cells are matched by id);
    ``header`` is Markdown placed after the title (the downloads). Raises ``ValueError`` when
    ``released`` is not the release of ``executed``'s source (release/ is older than source/).
    """
    ran = {cell.id: cell for cell in executed.cells}
    withheld = withheld_outputs(executed)
    nb = nbformat.from_dict(copy.deepcopy(released))
    available: set[str] = set()
    cells = []
    for cell in nb.cells:
        source = ran.get(cell.id)
        if source is None and kind(cell) == "test":  # hidden tests alone: the instructor edition drops the cell
            cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            continue
        if (
            source is None
            or kind(source) != kind(cell)
            or (kind(cell) in ("given", "prose") and source.source.strip() != cell.source.strip())
        ):
            raise ValueError(
                f"the released notebook differs from the source in cell {cell.id} ({kind(cell)}): "
                "release/ is older than source/; run `make release`"
            )
        if kind(cell) == "written":
            cells.append(nbformat.v4.new_markdown_cell(written_note, id=cell.id, metadata=cell.metadata))
            continue
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if cell.id in withheld:
            if kind(cell) == "given" and source.get("outputs"):
                cells.append(nbformat.v4.new_markdown_cell(withheld[cell.id], id=f"{cell.id}-withheld"))
        else:
            cell.outputs = copy.deepcopy(source.outputs)
            cell.execution_count = source.execution_count
            available |= glued_keys(cell)
    for cell in cells:
        if cell.cell_type == "markdown":
            cell.source = unquote_withheld_glue(cell.source, available)
    title = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"), 0)
    cells.insert(title + 1, nbformat.v4.new_markdown_cell(header, id="genlab-downloads"))
    nb.cells = cells
    return nb


# ----------------------------------------------------------------------------------------------
# the leak scan of a built edition


class _Text(HTMLParser):
    """The text of an HTML page, line breaks kept, scripts and styles left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "pre", "td", "th"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def page_text(page: str) -> str:
    """The visible text of an HTML page (code keeps its lines)."""
    parser = _Text()
    parser.feed(page)
    return html.unescape("".join(parser.parts))


def published_texts(folder: Path) -> dict[Path, str]:
    """Every page and text file a built edition publishes (HTML as its text), by path."""
    texts = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix == ".html":
            texts[path] = page_text(path.read_text(errors="replace"))
        elif path.suffix in (".txt", ".ipynb", ".md", ".py"):
            texts[path] = path.read_text(errors="replace")
    return texts


def _words(text: str) -> list[str]:
    """Lower-case words of Markdown or page text, without math (TeX in $...$, \\(...\\), \\[...\\]) or code."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]|`[^`]*`", " ", text, flags=re.S)
    return re.findall(r"[a-z]+", text.lower())


def _phrases(words: list[str], n: int) -> set[str]:
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def model_answer_phrases(nb: NotebookNode, words: int = 8) -> set[str]:
    """Runs of ``words`` words of the model answers that no public cell of the notebook also has."""
    secret: set[str] = set()
    public: set[str] = set()
    for cell in nb.cells:
        (secret if kind(cell) == "written" else public).update(_phrases(_words(cell.source), words))
    return secret - public


def leaks(folder: Path, sources: Iterable[NotebookNode], secrets: set[str]) -> list[str]:
    """What a built student edition must not show, found in ``folder``.

    ``secrets`` are the release leak scan's lines (``autograder.release``: solution lines, hidden-test
    lines and graded reference code); model answers are also looked for as runs of eight words, since a
    rendered page re-flows their lines.
    """
    phrases: set[str] = set()
    for nb in sources:
        phrases |= model_answer_phrases(nb)
    found = []
    for path, text in published_texts(folder).items():
        found += [f"{path.relative_to(folder)}: {line}" for line in notebooks.find_leaks(text, secrets)]
        plain = f" {' '.join(_words(text))} "
        found += [f"{path.relative_to(folder)}: model answer '{p}'" for p in sorted(phrases) if f" {p} " in plain]
    return found
