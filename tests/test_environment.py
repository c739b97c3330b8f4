"""The environment is declared once: pyproject.toml, the lock made from it, environment.yml made from both.

These tests fail with the command that repairs them (`make lock`), and with every import that no
requirement covers, so a package that happens to be installed today cannot hide a missing one.
"""

from __future__ import annotations

import ast
import email
import functools
import importlib.metadata
import json
import re
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from autograder import release
from tools import environment

ROOT = environment.ROOT
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK_TEXT = environment.LOCK.read_text()
# Trees whose imports the course environment must provide (release/ is generated from them).
TREES = ("src", "autograder", "book", "benchmarks", "tests", "tools")
# The project's own packages, and the book's scripts (tests import them with book/ on the path).
FIRST_PARTY = {"genlab", "autograder", "tests", "tools"} | {p.stem for p in (ROOT / "book").glob("*.py")}
# Imports that may fail: the package falls back (a progress bar outside Jupyter without IPython).
OPTIONAL_IN_PACKAGE = {"ipython"}


def all_requirements() -> list[Requirement]:
    """The package's requirements and those of every extra (its own extras by name)."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra if environment.canonical(Requirement(r).name) != "genlab"]
    return reqs


def declared(extras: tuple[str, ...] | None = None) -> set[str]:
    """Distribution names required by the package and by ``extras`` (every extra when None)."""
    names = {environment.canonical(Requirement(r).name) for r in PROJECT["dependencies"]}
    for extra, reqs in PROJECT["optional-dependencies"].items():
        if extras is None or extra in extras:
            names |= {environment.canonical(Requirement(r).name) for r in reqs}
    return names - {"genlab"}


def imports(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """Top-level module names imported by ``tree``, each with whether it sits inside a function."""

    def walk(node: ast.AST, nested: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                yield from ((alias.name.split(".")[0], nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module.split(".")[0], nested
            yield from walk(child, inner)

    yield from walk(tree, False)


def python_files() -> Iterator[Path]:
    for tree in TREES:
        yield from (p for p in (ROOT / tree).rglob("*.py") if "_build" not in p.parts)
    yield ROOT / "nbgrader_config.py"


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # IPython magics and shell escapes are not Python
    return "\n".join(line for text in code for line in text.splitlines() if not line.lstrip().startswith(("%", "!")))


def third_party(names: set[str], local: set[str]) -> set[str]:
    return {n for n in names if n not in sys.stdlib_module_names and n not in FIRST_PARTY | local and n != "__future__"}


@functools.cache
def providers() -> dict[str, list[str]]:
    """Module name -> distributions installing it (a scan of every installed package: once)."""
    return dict(importlib.metadata.packages_distributions())


def distribution_of(module: str) -> str:
    dists = providers().get(module)
    if not dists:
        pytest.fail(f"no installed distribution provides the module {module!r}: declare it in pyproject.toml")
    return environment.canonical(dists[0])


def test_environment_yml_is_made_from_pyproject_and_the_lock():
    expected = environment.render(PYPROJECT, LOCK_TEXT)
    assert (ROOT / "environment.yml").read_text() == expected, "environment.yml is out of date: run `make lock`"


def test_the_lock_pins_every_requirement_with_hashes():
    pins = environment.locked(LOCK_TEXT)
    wrong = []
    for req in all_requirements():
        versions = [v for v, _ in pins.get(environment.canonical(req.name), [])]
        if not versions or not all(req.specifier.contains(Version(v), prereleases=True) for v in versions):
            wrong.append(f"{req} (lock: {versions or 'missing'})")
    assert not wrong, f"requirements/lock.txt does not satisfy pyproject.toml: {wrong}; run `make lock`"
    # one block per pin: its line, then its hashes (pip installs the lock with --require-hashes)
    blocks = re.split(r"\n(?=[^\s#])", LOCK_TEXT.split("\n", 2)[2])
    assert len(blocks) == sum(len(v) for v in pins.values()) > 100
    unhashed = [b.split()[0] for b in blocks if "--hash=sha256:" not in b]
    assert not unhashed, f"pins without hashes in requirements/lock.txt: {unhashed}; run `make lock`"


def test_the_reader_of_the_lock_sees_markers_and_every_pin():
    text = (
        "numpy==2.4.6 ; python_full_version < '3.12' \\\n    --hash=sha256:aa\n"
        "numpy==2.5.5 ; python_full_version >= '3.12' \\\n    --hash=sha256:bb\n"
        "Torch==2.14.1 \\\n    --hash=sha256:cc\n    # via genlab\n"
    )
    assert environment.locked(text) == {
        "numpy": [("2.4.6", "python_full_version < '3.12'"), ("2.5.5", "python_full_version >= '3.12'")],
        "torch": [("2.14.1", None)],
    }


def test_every_imported_package_is_declared():
    missing: dict[str, set[str]] = {}
    names = declared()
    for path in python_files():
        local = {p.stem for p in path.parent.glob("*.py")}
        found = {name for name, _ in imports(ast.parse(path.read_text(), str(path)))}
        for module in third_party(found, local):
            if distribution_of(module) not in names:
                missing.setdefault(distribution_of(module), set()).add(str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "source").rglob("*.ipynb")):
        found = {name for name, _ in imports(ast.parse(notebook_code(path), str(path)))}
        for module in third_party(found, set()):
            if distribution_of(module) not in names:
                missing.setdefault(distribution_of(module), set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_scanner_finds_nested_and_from_imports():
    tree = ast.parse("import a.b\nfrom c import d\nfrom . import e\ndef f():\n    import g\n")
    assert sorted(imports(tree)) == [("a", False), ("c", False), ("g", True)]


def test_the_package_requires_exactly_what_it_imports():
    """Students install the package's own requirements: no more than it imports, the solvers in an extra."""
    anywhere: set[str] = set()
    for path in (ROOT / "src" / "genlab").rglob("*.py"):
        local = {p.stem for p in path.parent.glob("*.py")}
        found = {name for name, _ in imports(ast.parse(path.read_text(), str(path)))}
        anywhere |= {distribution_of(m) for m in third_party(found, local)}
    lipschitz = declared(("lipschitz",)) - declared(())
    base = declared(())
    assert base == anywhere - lipschitz - OPTIONAL_IN_PACKAGE
    # the solvers are called by name through cvxpy, never imported: the extra holds them beside it
    assert anywhere & lipschitz == {"cvxpy", "eclipse-nn"}
    assert {"clarabel", "scs"} <= lipschitz


def test_the_student_wheel_requires_the_package_and_offers_the_solvers(tmp_path):
    wheel = release.student_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith("/METADATA"))))
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    plain = {environment.canonical(r.name) for r in requires if r.marker is None}
    extra = {environment.canonical(r.name) for r in requires if r.marker is not None}
    assert meta.get_all("Provides-Extra") == ["lipschitz"]
    assert plain == declared(())
    assert extra == declared(("lipschitz",)) - declared(())
    assert all(r.marker.evaluate({"extra": "lipschitz"}) for r in requires if r.marker is not None)
    assert not any(r.marker.evaluate({"extra": ""}) for r in requires if r.marker is not None)
