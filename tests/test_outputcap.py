"""Every byte a submission writes is capped, and outputs nbgrader cannot store are dropped with a note (fast tests).

The routes of the hostile examination: a display updated in place again and again, outputs
nested too deep or not UTF-8, outputs the notebook format refuses, a flood of long verdicts.
The kernel is simulated by feeding its messages to the execution step; the end-to-end runs are
in tests/test_hostile.py.
"""

from __future__ import annotations

import json

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook, new_output

from autograder import outputcap
from autograder.preprocessors import CapOutputs, GradeExecute


def message(msg_type: str, content: dict, display_id: str | None = None) -> dict:
    if display_id:
        content = {**content, "transient": {"display_id": display_id}}
    return {
        "msg_type": msg_type,
        "header": {"msg_type": msg_type},
        "parent_header": {"msg_id": "p"},
        "content": content,
    }


def display(data: dict, display_id: str | None = None, update: bool = False) -> dict:
    kind = "update_display_data" if update else "display_data"
    return message(kind, {"data": data, "metadata": {}}, display_id)


def executing(cap: int) -> tuple[GradeExecute, nbformat.NotebookNode]:
    """The execution step as it stands while a kernel runs a two-cell notebook, with an output cap of ``cap``."""
    nb = new_notebook(cells=[new_code_cell("x"), new_code_cell("y")])
    step = GradeExecute()
    NotebookClient.__init__(step, nb, None)
    step.reset_execution_trackers()
    step._output_bytes, step._cut, step._output_cap = 0, False, cap
    step.clear_before_next_output = False  # set by nbclient for each cell it executes
    return step, nb


def test_display_updates_count_for_every_output_they_replace():
    step, nb = executing(cap=100_000)
    for _ in range(50):  # the same display shown 50 times ...
        step.process_message(display({"text/plain": "x"}, "d"), nb.cells[0], 0)
    for _ in range(100):  # ... then updated in place with 10 kB, again and again
        step.process_message(display({"text/plain": "y" * 10_000}, "d", update=True), nb.cells[0], 0)
    stored = sum(len(o["data"]["text/plain"]) for o in nb.cells[0].outputs if o.output_type == "display_data")
    assert stored <= 100_000, f"{stored} bytes of display updates stored against a 100 kB cap"
    assert any("display not updated" in o["data"]["text/plain"] for o in nb.cells[0].outputs if "data" in o)


def test_outputs_past_the_cap_are_cut_with_one_note():
    step, nb = executing(cap=50_000)
    for _ in range(100):
        step.process_message(message("stream", {"name": "stdout", "text": "z" * 1000}), nb.cells[1], 1)
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert len(text) < 60_000 and text.count("output cut") == 1


def test_outputs_nbgrader_cannot_store_become_a_note_and_errors_stay_errors():
    step, nb = executing(cap=10**7)
    deep: list = []
    for _ in range(200):
        deep = [deep]
    cell = nb.cells[0]
    step.process_message(display({"application/json": deep, "text/plain": "d"}), cell, 0)
    step.process_message(display({"text/plain": "lone surrogate \udcff"}), cell, 0)
    step.process_message(display({"text/plain": 5}), cell, 0)  # not a valid payload
    step.process_message(message("error", {"ename": "E", "evalue": "v", "traceback": [1, {"x": 2}]}), cell, 0)
    step.process_message(display({"text/plain": "fine"}), cell, 0)
    kinds = [(o.output_type, o.get("text", o.get("evalue", o.get("data", {}).get("text/plain")))) for o in cell.outputs]
    assert [k for k, _ in kinds] == ["stream", "stream", "stream", "error", "display_data"], kinds
    assert "nested more than" in kinds[0][1] and "not text a notebook can hold" in kinds[1][1]
    assert "not a valid display_data output" in kinds[2][1] and "cannot store" in kinds[3][1]
    nbformat.validate(nb)
    nbformat.writes(nb).encode("utf-8")  # the notebook can be written


def test_widget_messages_leave_no_state_behind():
    step, nb = executing(cap=10**7)
    for k in range(100):
        step.process_message(
            message("comm_open", {"comm_id": str(k), "target_name": "jupyter.widget", "data": {"state": "w" * 10_000}}),
            nb.cells[0],
            0,
        )
    assert not step.widget_state and not nb.cells[0].outputs


def graded(outputs: list, gid: str = "test_x") -> nbformat.NotebookNode:
    meta = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 1, "grade_id": gid}}
    return new_code_cell("probe_x(x)", metadata=meta, outputs=outputs)


def test_cap_notebook_keeps_the_errors_that_decide_a_score():
    flood = [new_output("stream", name="stdout", text="f" * 100_000) for _ in range(100)]
    verdict = new_output("error", ename="AssertionError", evalue="wrong: " + "w" * 50_000, traceback=["t" * 80] * 500)
    nb = new_notebook(
        cells=[
            new_code_cell("flood()", outputs=flood),
            graded([new_output("stream", name="stdout", text="visible\n"), verdict]),
            graded([new_output("display_data", data={"text/plain": "passed"})], "test_y"),
        ]
    )
    cut = outputcap.cap_notebook(nb, 2 * 2**20)
    assert cut > 7 * 2**20 and outputcap.notebook_bytes(nb) <= 2 * 2**20
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].evalue.startswith("wrong: ") and len(errors[0].evalue) < 3000
    assert sum("output cut" in o.get("text", "") for c in nb.cells for o in c.outputs) == 1
    nbformat.validate(nb)


def test_cap_notebook_leaves_a_notebook_under_the_cap_alone():
    nb = new_notebook(cells=[graded([new_output("stream", name="stdout", text="ok\n")])])
    before = json.dumps(nb)
    assert outputcap.cap_notebook(nb, 2**20) == 0 and json.dumps(nb) == before


def test_cap_outputs_holds_many_small_outputs_and_long_verdicts_to_the_cap():
    image = {"output_type": "display_data", "data": {"text/plain": "i", "image/png": "iVBORw0KGgo="}, "metadata": {}}
    tiny = [nbformat.from_dict(image) for _ in range(50_000)]  # (made without validating each)
    verdicts = [graded([new_output("error", ename="AssertionError", evalue="c" * 8000)], f"t{k}") for k in range(40)]
    many = nbformat.from_dict({"id": "m", "cell_type": "code", "source": "f()", "metadata": {}, "execution_count": 1})
    many.outputs = tiny
    nb = new_notebook(cells=verdicts)
    nb.cells.insert(0, many)
    out, _ = CapOutputs(limit_mb=1).preprocess(nb, {})
    assert len(nbformat.writes(out).encode()) <= 2**20
    assert all(any(o.output_type == "error" for o in c.outputs) for c in out.cells[1:])
