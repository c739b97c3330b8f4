"""The sanitiser of pages made from submissions, the feedback page's policy and its exercise titles (fast tests)."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_output

from autograder import feedback, inert, manifest, notebooks

RUNS_OR_FETCHES = {
    "script": "<script>fetch('/x')</script>",
    "img-onerror": "<img src=x onerror=\"fetch('/x')\">",
    "a-javascript": "<a href=\"javascript:fetch('/x')\">click</a>",
    "a-relative": "<a href='/api/contents/gradebook.db'>click</a>",
    "iframe": "<iframe src='/x' srcdoc='<script>fetch(1)</script>'></iframe>",
    "svg": "<svg onload=\"fetch('/x')\"><script>fetch('/x')</script></svg>",
    "object-embed": "<object data='/x'></object><embed src='/x'>",
    "meta-refresh": "<meta http-equiv='refresh' content='0;url=/x'>",
    "css-url": "<div style=\"background:url(javascript:fetch('/x'))\">t</div>",
    "style-tag": "<style>@import '/x'; body { background: url(/x) }</style>",
    "remote-img": "<img src='https://example.org/x.png'>",
    "link-base-form": "<link rel=stylesheet href='/x'><base href='/x/'><form action='/x'><button>b</button></form>",
    "math-tag": "<math><mtext><script>fetch('/x')</script></mtext></math>",
    "entity-js": "<a href='&#106;avascript:fetch(1)'>x</a>",
    "data-html": "<a href='data:text/html,<script>fetch(1)</script>'>x</a>",
    "position-fixed": "<div style='position:fixed;top:0;color:red'>Score: 10 / 10</div>",
}


@pytest.mark.parametrize("vector", RUNS_OR_FETCHES)
def test_clean_html_leaves_nothing_that_runs_fetches_or_overlays(vector):
    out = inert.clean_html(RUNS_OR_FETCHES[vector])
    assert not re.search(r"<(script|iframe|object|embed|svg|meta|link|base|form|style|math)\b", out, re.I), out
    assert not re.search(r"\son\w+=|javascript:|fetch|url\(|position|href=['\"]?(/|data:)|src=['\"]?[^d'\"]", out), out


def test_clean_html_keeps_tables_images_links_and_colours():
    table = "<table class='dataframe' border='1'><thead><tr><th>a</th></tr></thead>"
    table += "<tbody><tr><td>1</td></tr></tbody></table>"
    png = "<img src='data:image/png;base64,iVBORw0KGgo=' alt='plot' width='10'>"
    out = inert.clean_html(table + png + "<a href='https://example.org'>x</a><span style='color: red'>y</span>")
    assert "<table" in out and "<td>1</td>" in out and 'class="dataframe"' in out
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in out and 'alt="plot"' in out
    assert 'href="https://example.org"' in out and 'style="color:red"' in out


def test_inert_outputs_drop_active_types_and_say_so():
    js = new_output("display_data", data={"application/javascript": "alert(1)"})
    widget = new_output(
        "display_data",
        data={"application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "w"},
        metadata={"isolated": True},
    )
    html = new_output(
        "display_data", data={"text/html": "<b>x</b>"}, metadata={"text/html": {"isolated": True, "width": 3}}
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[js, widget, html])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    out, _ = inert.InertOutputs().preprocess(nb, {})
    first, second, third = out.cells[0].outputs
    assert first.output_type == "stream" and "application/javascript" in first.text
    assert dict(second.data) == {"text/plain": "w"} and dict(second.metadata) == {}
    assert dict(third.metadata) == {"text/html": {"width": 3}}
    assert "widgets" not in out.metadata


def test_the_policy_admits_exactly_the_page_scripts():
    loader, policy = feedback.page_scripts()
    scripts = re.search(r"script-src ([^;]*)", policy).group(1).split()
    assert scripts == [inert.script_hash(loader), inert.script_hash(feedback.mathjax_code())]
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "://" not in loader, "MathJax never comes from the network"


@pytest.mark.parametrize("m", manifest.all_manifests(), ids=lambda m: m.name)
def test_every_graded_cell_is_named_after_its_exercise(m):
    nb = notebooks.read(m.source)
    titles = feedback.exercise_titles(nb)
    for cell in nb.cells:
        meta = notebooks.meta(cell)
        if meta.get("grade"):
            title = titles.get(meta["grade_id"])
            assert title, f"{m.name}: no exercise title for {meta['grade_id']}"
            assert title.count("$") % 2 == 0, f"{title}: cut inside math"
            assert "points" not in title, title


def test_exercise_titles_come_from_the_prose_before_each_cell():
    nb = nbformat.v4.new_notebook()
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    test = {"nbgrader": {"grade": True, "grade_id": "test_f", "points": 2}}
    written = {"nbgrader": {"grade": True, "solution": True, "grade_id": "q", "points": 1}}
    nb.cells = [
        md("## 2 A section\n\nprose\n\n### Exercise 3: the decoder (3 points)\n\nWrite it."),
        code("def f(): ..."),
        code("assert f()", metadata=test),
        md("**Question (written answer, 2 points).** Why does\nit work? Say more."),
        md("my answer with **Question (fake).** in it", metadata=written),
    ]
    assert feedback.exercise_titles(nb) == {"test_f": "Exercise 3: the decoder", "q": "Question: Why does it work?"}
