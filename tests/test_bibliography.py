"""Every paper a chapter names is cited from book/references.bib, and every citation resolves."""

from __future__ import annotations

import re

import pytest

from autograder import manifest, notebooks
from tests.conftest import ROOT

BIB = ROOT / "book" / "references.bib"
NAMES = [m.name for m in manifest.all_manifests()]
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
# An author-year mention ("Szegedy et al. (2014)", "Wong, Rice and Kolter 2020", "(Burda et al., 2016)")
# or an arXiv number, written out instead of cited.
AUTHORS = r"[A-Z][a-z]+(?:\s+et\s+al\.|(?:,\s+[A-Z][a-z]+)*\s+(?:and|&)\s+[A-Z][a-z]+)"
NAMED = re.compile(AUTHORS + r"['’]?s?,?\s+\(?(?:[A-Z][A-Za-z]+\s+)?(?:19|20)\d\d\b|arXiv[: ]\d{4}\.\d{4,5}")


def bib_keys() -> set[str]:
    return set(re.findall(r"^@\w+\{([^,]+),", BIB.read_text(), re.M))


def prose(name: str) -> str:
    """The Markdown of a chapter: prose, exercise texts and model answers."""
    nb = notebooks.read(manifest.load(name).source)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("name", NAMES)
def test_every_paper_a_chapter_names_is_cited(name):
    text = CITE.sub(" ", prose(name))
    assert not NAMED.findall(text), f"{name} names papers without citing them: {NAMED.findall(text)}"


@pytest.mark.parametrize("name", NAMES)
def test_every_citation_is_in_the_bibliography(name):
    cited = {key.strip() for keys in CITE.findall(prose(name)) for key in keys.split(",")}
    assert cited, f"{name} cites nothing"
    assert cited <= bib_keys(), f"{name} cites keys missing from {BIB}: {sorted(cited - bib_keys())}"


def test_the_check_finds_uncited_papers():
    samples = [
        "Szegedy et al. (2014) found",
        "(Burda et al., 2016)",
        "Wong, Rice and Kolter 2020",
        "arXiv 2105.14866",
        "(Heusel\net al., 2017)",
        "(Xu & Sivaranjani, NeurIPS 2024;",
    ]
    for sample in samples:
        assert NAMED.search(sample), sample
    assert not NAMED.search(CITE.sub(" ", "{cite:t}`szegedy2014intriguing` found, in the 2022 reproduction"))


def test_every_entry_is_cited_somewhere():
    cited = {key.strip() for name in NAMES for keys in CITE.findall(prose(name)) for key in keys.split(",")}
    assert bib_keys() <= cited, f"entries no chapter cites: {sorted(bib_keys() - cited)}"
