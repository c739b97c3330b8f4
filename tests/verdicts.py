"""Verdicts of a chapter's hidden tests, in process: over many seeds, and through the notebook's own test cells.

A check's verdict on an answer must not depend on the seed a grading run picks: every correct
style passes and every wrong answer fails, with its message, for each of :data:`SEEDS`. One
reference run per seed serves every answer (``Check.judge``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from autograder import manifest, notebooks, probing

# How many seeds a sweep tries: 24 in `make test` (a whole sweep costs as much as the rest of the
# suite); `make seeds` tries 200, after any change of a check or of its inputs.
SEEDS = range(int(os.environ.get("GENLAB_VERDICT_SEEDS", "24")))


def verdict(check: probing.Check, answer: Any, seed: int) -> str | None:
    """What the check says of ``answer`` with this seed: None (it passes) or the first problem."""
    return check.verify(check.run(answer, seed), seed)


class _Judged(BaseException):
    """A record that fails its expectation: the probe of a wrong answer need not run further."""

    def __init__(self, problem: str):
        self.problem = problem


@contextmanager
def _judged_as_recorded(expected: dict[str, probing.Expectation]) -> Iterator[None]:
    """Judge every record of a student's run as it is made, in the order ``Check.judge`` does.

    Records are judged in the order they are made (those of results last), and a test reads only
    records made before its own, so the first failure met here is the one the whole run would give;
    raising it at once spares the rest of a wrong answer's probe.
    """
    register = probing.Trial._register

    def judging(trial: probing.Trial, key: str, value: Any, expectation: probing.Expectation) -> None:
        register(trial, key, value, expectation)
        exp = expected.get(key)
        if trial.reference or exp is None or exp.late:
            return
        got = trial.records[key]
        problem = probing.kind_problem(got, exp.value) or exp.test(got, exp.value, trial.records)
        if problem:
            raise _Judged(f"{exp.what}: {problem}" + (f". {exp.hint}" if exp.hint else ""))

    probing.Trial._register = judging  # type: ignore[method-assign]
    try:
        yield
    finally:
        probing.Trial._register = register  # type: ignore[method-assign]


def unstable_verdicts(
    check: probing.Check,
    correct: Mapping[str, Any],
    wrong: Mapping[str, tuple[Any, str]],
    seeds: Iterable[int] = SEEDS,
) -> list[str]:
    """Each seed on which a correct answer fails, or a wrong one passes or fails without its message."""
    found = []
    for seed in seeds:
        expected = check.expectations(seed)
        for name, answer in correct.items():
            problem = check.judge(check.run(answer, seed), expected)
            if problem is not None:
                found.append(f"seed {seed}: the correct {name} failed: {problem}")
        for name, (answer, pattern) in wrong.items():
            try:
                with _judged_as_recorded(expected):
                    payload = check.run(answer, seed)
                problem = check.judge(payload, expected)
            except _Judged as judged:
                problem = judged.problem
            if problem is None or not re.search(pattern, problem):
                found.append(f"seed {seed}: the wrong {name} got {problem!r}, not /{pattern}/")
    return found


def assert_stable(check: probing.Check, correct: Mapping[str, Any], wrong: Mapping[str, tuple[Any, str]]) -> None:
    """No verdict of ``check``, nor the message of a wrong answer, depends on the seed."""
    found = unstable_verdicts(check, correct, wrong)
    assert found == [], f"{len(found)} verdicts depend on the seed: {found[:5]}"


def coverage_gaps(module: Any, seed: int = 0) -> dict[str, set[str]]:
    """For every check of a chapter, the conditions of its text that no input drew."""
    gaps = {}
    for name, check in probing.checks_of(module).items():
        if name.startswith("probe_"):
            missing = set(check.conditions) - check.coverage(seed)
            if missing or not check.conditions:
                gaps[check.exercise] = missing or {"<no conditions listed>"}
    return gaps


class Notebook:
    """A source notebook's solution and test cells, run in process with some solutions replaced.

    ``given`` names the grade_ids of given cells the test cells need (toy models, say); the
    chapter's imports (its first code cell that the book shows: a diagram's cell comes earlier)
    always run. Probes verify at once (no probe folder is set).
    """

    def __init__(self, chapter: str, given: Iterable[str] = (), names: Mapping[str, Any] | None = None):
        nb = notebooks.read(manifest.ROOT / "source" / chapter / f"{chapter}.ipynb")
        code = [c for c in nb.cells if c.cell_type == "code"]
        wanted = set(given)
        imports = next(c for c in code if "remove-input" not in c.get("metadata", {}).get("tags", []))
        self.setup = [imports.source] + [c.source for c in code if notebooks.meta(c).get("grade_id") in wanted]
        self.solutions = {notebooks.meta(c)["grade_id"]: c.source for c in code if notebooks.meta(c).get("solution")}
        self.tests = {
            notebooks.meta(c)["grade_id"]: c.source
            for c in code
            if notebooks.meta(c).get("grade") and not notebooks.meta(c).get("solution")
        }
        self.names = dict(names or {})
        self.mistakes = list(manifest.load(chapter).mistakes)

    def failing(self, replace: Mapping[str, str], on_setup: Callable[[dict], None] | None = None) -> set[str]:
        """The test cells that raise when the solution cells in ``replace`` hold other code."""
        ns: dict[str, Any] = dict(self.names)
        for source in self.setup:
            exec(source, ns)
        if on_setup is not None:
            on_setup(ns)
        for gid, source in self.solutions.items():
            exec(replace.get(gid, source), ns)
        failed = set()
        for gid, source in self.tests.items():
            try:
                exec(source, ns)
            except Exception:  # a failed assert or probe, or a crash: the cell loses its points
                failed.add(gid)
        return failed
