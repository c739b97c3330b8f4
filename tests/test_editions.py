"""book/editions.py on small notebooks: what the student edition withholds, and the scan that proves it."""

from __future__ import annotations

import sys

import nbformat
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "book"))

import editions

SOLUTION = {"nbgrader": {"solution": True, "grade": False, "locked": False, "grade_id": "f", "schema_version": 3}}
WRITTEN = {"nbgrader": {"solution": True, "grade": True, "points": 2, "grade_id": "q", "schema_version": 3}}
TEST = {
    "nbgrader": {"solution": False, "grade": True, "locked": True, "points": 1, "grade_id": "t", "schema_version": 3}
}
MODEL_ANSWER = "**Model answer.** The encoder squeezes every code towards the prior, which blurs the samples."


def output(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def glued(name: str, value: float) -> nbformat.NotebookNode:
    return nbformat.v4.new_output(
        "display_data",
        data={f"{editions.GLUE_MIME}text/plain": repr(value)},
        metadata={"scrapbook": {"name": name, "mime_prefix": editions.GLUE_MIME}},
    )


def code(source: str, cid: str, outputs=(), **metadata) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, id=cid, metadata=metadata)
    cell.outputs = list(outputs)
    return cell


def executed_source() -> nbformat.NotebookNode:
    """A chapter after its run: given code, an answer, a test, a model answer and cells depending on them."""
    cells = [
        nbformat.v4.new_markdown_cell("# A chapter", id="title"),
        code("import torch\ndata = torch.arange(4)\nprint(data.sum())", "data", [output("6\n")]),
        code(
            "print(data.max())\nfrom genlab.glue import glue\nglue('size', 4)",
            "safe",
            [output("3\n"), glued("size", 4)],
        ),
        code("def helper(x):\n    return square(x) + 1", "helper", [output("defined\n")]),
        code("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION", "answer", **SOLUTION),
        code("assert square(2) == 4", "test", **TEST),
        code(
            "result = helper(data)\nprint(result)", "uses", [output("tensor([ 1,  2,  5, 10])\n"), glued("top", 10.0)]
        ),
        code("print(result.max())", "downstream", [output("tensor(10)\n")]),
        code("show('cvae.png')", "ref", [output("a reference figure\n")], tags=["reference-run"]),
        code("%time data.sum()", "magic", [output("Wall time: 1 us\n")]),
        nbformat.v4.new_markdown_cell("The largest is {glue:text}`top:.0f` of {glue:text}`size`.", id="prose"),
        nbformat.v4.new_markdown_cell(MODEL_ANSWER, id="written", metadata=WRITTEN),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def released(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """What nbgrader releases: outputs cleared, the solution and the model answer replaced."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(source), as_version=4))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if cell.id == "answer":
            cell.source = "def square(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
        if cell.id == "written":
            cell.source = "YOUR ANSWER HERE"
    return nb


def test_outputs_that_depend_on_an_answer_are_withheld():
    withheld = editions.withheld_outputs(executed_source())
    # helper calls the answer (defined later), uses calls helper, downstream reads what uses computed
    assert set(withheld) == {"helper", "answer", "test", "uses", "downstream", "ref", "magic"}
    assert withheld["ref"] == editions.REFERENCE_NOTE
    assert withheld["uses"] == editions.WITHHELD_NOTE


def test_a_cell_that_changes_a_shared_object_taints_what_reads_it_later():
    nb = executed_source()
    nb.cells.insert(3, code("data.add_(square(1))", "mutates"))
    nb.cells.append(code("print(data)", "later", [output("tensor([1, 2, 3, 4])\n")]))
    nb.cells.append(code("print(torch.zeros(1))", "module-only", [output("tensor([0.])\n")]))
    withheld = editions.withheld_outputs(nb)
    assert {"mutates", "later"} <= set(withheld)
    assert not {"data", "safe", "module-only"} & set(withheld), "a module used by a withheld cell is no result"


def test_student_chapter_shows_the_release_with_the_outputs_it_may():
    source = executed_source()
    nb = editions.student_chapter(released(source), source, "**Download** the notebook.")
    by_id = {cell.id: cell for cell in nb.cells}
    assert [c.id for c in nb.cells][:2] == ["title", "genlab-downloads"], "downloads right under the title"
    assert by_id["data"].outputs and by_id["safe"].outputs, "given code alone: its outputs are shown"
    for cid in ("helper", "uses", "downstream", "ref", "magic", "test", "answer"):
        assert not by_id[cid].outputs, cid
    assert by_id["uses-withheld"].source == editions.WITHHELD_NOTE
    assert by_id["ref-withheld"].source == editions.REFERENCE_NOTE
    assert "raise NotImplementedError()" in by_id["answer"].source
    assert by_id["written"].source == editions.ANSWER_NOTE
    assert by_id["prose"].source == f"The largest is {editions.GLUE_PLACEHOLDER} of {{glue:text}}`size`."


def test_a_release_older_than_the_source_is_refused():
    source = executed_source()
    stale = released(source)
    stale.cells[1].source = "data = torch.arange(3)"
    with pytest.raises(ValueError, match="make release"):
        editions.student_chapter(stale, source, "")


def test_the_leak_scan_finds_solutions_and_model_answers_in_pages(tmp_path):
    source = executed_source()
    secrets = {"return x * x  # the only secret line here"}
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "chapter.html").write_text("<p>The encoder <em>squeezes</em> codes.</p><pre>def square(x):</pre>")
    assert editions.leaks(clean, [source], secrets) == []
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "chapter.html").write_text(
        '<div class="highlight"><pre><span class="k">return</span> x <span class="o">*</span> x'
        "  # the only secret line here</pre></div>"
        "<p><strong>Model answer.</strong> The encoder squeezes every code\ntowards the prior, which blurs</p>"
    )
    found = editions.leaks(leaky, [source], secrets)
    assert any("return x * x" in f for f in found), found
    assert any("model answer" in f for f in found), found


def test_page_text_keeps_code_lines_and_drops_scripts():
    text = editions.page_text("<script>var a = 1;</script><pre>a = 1\nb = 2</pre><p>x &amp; y</p>")
    assert "var a" not in text and "a = 1\nb = 2" in text and "x & y" in text
