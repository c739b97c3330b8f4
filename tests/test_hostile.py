"""Hostile submissions, graded in one batch with honest ones, through the real nbgrader commands.

A small assignment (three exercises whose checks come from ae_to_cvae) with tight limits is
released into a temporary course. Canaries are planted in the course, in the grader's home and
/tmp, in another student's notebook and in the grader's environment. Each hostile submission is
the blank or the correct notebook with one attack added (:data:`ATTACKS`), a tampered notebook
(:data:`TAMPERED`) or a file that is no notebook at all (:data:`MALFORMED`); the batch must
finish, no attack may gain a point over its honest score and each gets what its answer cells
earn, no honest submission may lose one, no canary may reach an output, a feedback page or the
grade table, every page and notebook made from a submission stays under the output cap and runs
no script of its own, and the course must be left as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell
from nbgrader.api import Gradebook

from autograder import grade, notebooks, release, sandbox, status
from autograder.course import gradebook_url
from tests import gradingcourse
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sandbox.available(), reason="needs root and bubblewrap (Debian package `bubblewrap`)"),
]

NAME = "hostile"
SECRET = "canary-7f3a91c2"  # the string no output may ever contain
ENV_SECRET = "canary-env-51d0be"
MANIFEST = f"""title = "Hostile submissions"
notebook = "{NAME}.ipynb"
points = 10
due = "2027-01-01T00:00:00+00:00"
gpu = "none"
time_limit_s = 150
memory_limit_mb = 1536
disk_limit_mb = 64
cell_timeout_s = 15
output_limit_mb = 2
"""
OUTPUT_CAP = 2 * 2**20

ANSWERS = gradingcourse.ANSWERS


def source_notebook() -> nbformat.NotebookNode:
    return gradingcourse.source_notebook("A small assignment to attack.")


# Each attack: (cell source, built on "blank" or "correct", where it goes: see build()).
# Snooping attacks print whatever they find; the canaries must not come back.
SNOOP = """
import glob, subprocess
found = []
for pattern in ["{root}/**/*", "/root/**/*", "/tmp/**/*", "/home/**/*", "/work/**/*", "/proc/*/environ", "/proc/*/cmdline"]:
    for path in glob.glob(pattern, recursive=True)[:2000]:
        try:
            found.append(path + ": " + open(path, errors="replace").read(5000))
        except Exception as exc:
            found.append(path + ": " + type(exc).__name__)
print("\\n".join(found)[:200000])
print(dict(os.environ))
"""

ATTACKS: dict[str, tuple[str, str, str]] = {
    "patch-execute-reply": (
        """
        from ipykernel.ipkernel import IPythonKernel
        _orig = IPythonKernel.do_execute
        async def do_execute(self, *a, **k):
            reply = await _orig(self, *a, **k)
            return {**reply, "status": "ok"}
        IPythonKernel.do_execute = do_execute
        get_ipython().showtraceback = lambda *a, **k: None
        """,
        "blank",
        "first",
    ),
    "input-transformer": (
        """
        def _skip(lines):
            return ["pass\\n"] if any("probe_" in l or "assert" in l or "raise" in l for l in lines) else lines
        get_ipython().input_transformers_cleanup.append(_skip)
        """,
        "blank",
        "first",
    ),
    "always-close": (
        """
        torch.allclose = lambda *a, **k: True
        torch.equal = lambda *a, **k: True
        torch.isclose = lambda a, b, *r, **k: torch.ones_like(torch.as_tensor(a), dtype=torch.bool)
        math.isclose = lambda *a, **k: True
        """,
        "blank",
        "first",
    ),
    "fake-checks-module": (
        """
        import types
        fake = types.ModuleType("autograder.checks.ae_to_cvae")
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            setattr(fake, "probe_" + name, lambda f: None)
        sys.modules["autograder.checks.ae_to_cvae"] = fake
        """,
        "blank",
        "first",
    ),
    "forged-records": (
        """
        import autograder.checks.ae_to_cvae as checks
        from autograder import probing
        folder = os.environ.get("GENLAB_PROBE_DIR", ".")
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            keys = {}
            probing.write_payload(__import__("pathlib").Path(folder), name, {"records": {}, "crash": None})
            setattr(checks, "probe_" + name, lambda f: None)
        """,
        "blank",
        "first",
    ),
    "pickle-exploit-record": (
        """
        import pickle
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch /tmp/genlab-pwned",))
        folder = os.environ.get("GENLAB_PROBE_DIR", ".")
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            with open(os.path.join(folder, name + ".pt"), "wb") as fh:
                pickle.dump({"records": Evil()}, fh)
        import autograder.checks.ae_to_cvae as checks
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            setattr(checks, "probe_" + name, lambda f: None)
        """,
        "blank",
        "first",
    ),
    "stack-walk-and-reference": (
        """
        import inspect, genlab.latent, genlab.losses, genlab.models.mlp
        interpolate = genlab.latent.interpolate
        one_hot = genlab.models.mlp.one_hot
        gaussian_kl = genlab.losses.gaussian_kl
        print([f.frame.f_locals.keys() for f in inspect.stack()])
        """,
        "blank",
        "answers",
    ),
    "reference-from-source": (
        """
        import sys
        sys.path[:0] = ["{root}/src", "/work/main/src", "{root}"]
        for key in [k for k in sys.modules if k.startswith("genlab")]:
            del sys.modules[key]
        import genlab.latent, genlab.losses, genlab.models.mlp
        interpolate, one_hot, gaussian_kl = genlab.latent.interpolate, genlab.models.mlp.one_hot, genlab.losses.gaussian_kl
        """,
        "blank",
        "answers",
    ),
    "snoop-files-and-env": (SNOOP, "blank", "first"),
    "network": (
        """
        import socket
        for host, port in [("127.0.0.1", 5432), ("127.0.0.1", 22), ("8.8.8.8", 53), ("pypi.org", 443)]:
            try:
                socket.create_connection((host, port), timeout=2); print("open", host)
            except OSError as exc:
                print("closed", host, exc)
        """,
        "blank",
        "first",
    ),
    "write-and-delete-outside": (
        """
        import shutil
        for target in ["{root}/nbgrader_config.py", "{root}/source/canary.txt", "{root}/gradebook.db",
                       "{home}/.genlab-canary", "{tmp_canary}", "/etc/passwd"]:
            for action in (lambda p: open(p, "w").write("owned"), os.remove, shutil.rmtree):
                try:
                    action(target)
                except Exception as exc:
                    print(type(exc).__name__)
        os.symlink("{root}/nbgrader_config.py", "hostile.ipynb.link")
        os.symlink("{root}/source/{name}/{name}.ipynb", "link.ipynb")
        """,
        "blank",
        "first",
    ),
    "fork-bomb": (
        """
        import subprocess
        procs = []
        try:
            while True:
                procs.append(subprocess.Popen(["sleep", "60"]))
        except Exception as exc:
            print("stopped after", len(procs), type(exc).__name__)
        """,
        "correct",
        "last",
    ),
    "memory-bomb-forked": (
        """
        import multiprocessing as mp
        def hog():
            block = bytearray(700 * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            import time; time.sleep(30)
        children = [mp.Process(target=hog) for _ in range(6)]
        for c in children:
            c.start()
        for c in children:
            c.join()
        """,
        "correct",
        "last",
    ),
    "disk-fill": (
        """
        with open("fill.bin", "wb") as fh:
            for _ in range(2048):
                fh.write(b"x" * 2**20)
        """,
        "correct",
        "last",
    ),
    "huge-text-output": ("print('x' * (64 * 2**20))", "correct", "last"),
    "huge-html-output": (
        """
        from IPython.display import HTML, display
        display(HTML("<b>" + "y" * (128 * 2**20) + "</b>"))
        """,
        "correct",
        "last",
    ),
    "many-images": (
        """
        from IPython.display import Image, display
        import base64
        png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
        for _ in range(200000):
            display(Image(png))
        """,
        "correct",
        "last",
    ),
    "endless-cell": ("while True:\n    pass", "correct", "first"),
    "endless-ignoring-interrupts": (
        """
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while True:
            pass
        """,
        "correct",
        "last",
    ),
    "exit": ("os._exit(3)", "correct", "last"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "correct", "last"),
    "kill-everything": ("import signal\nos.kill(-1, signal.SIGKILL)", "correct", "last"),
    "stderr-warnings": (
        """
        import warnings
        warnings.simplefilter("always")
        _orig_interp = interpolate
        def interpolate(z0, z1, steps):
            warnings.warn("deprecated but fine", UserWarning)
            print("noise", file=sys.stderr)
            return _orig_interp(z0, z1, steps)
        """,
        "correct",
        "in:interpolate",
    ),
    # ---- issue 22: pages, messages, outputs, records, the connection folder
    "html-injection": (
        """
        from IPython.display import HTML, Javascript, Markdown, display
        run = "fetch('/pwned');document.title='PWNED'"
        display(HTML("<script>" + run + "</script><img src=x onerror=\\"" + run + "\\">"))
        display(HTML("<iframe src=/pwned></iframe><a href='javascript:" + run + "'>x</a><meta http-equiv=refresh content=0>"))
        display(Javascript(run))
        display(Markdown("<script>" + run + "</script>"))
        """,
        "correct",
        "last",
    ),
    "bad-signature": (
        """
        ip = get_ipython()
        session = ip.kernel.session
        key = session.key
        session.key = b"not the kernel's key"
        session.send(ip.kernel.iopub_socket, "stream", {"name": "stdout", "text": "forged"}, parent=ip.kernel.get_parent())
        session.key = key
        time.sleep(0.5)
        """,
        "correct",
        "last",
    ),
    "deep-json-message": (
        """
        from jupyter_client.session import DELIM
        ip = get_ipython()
        s = ip.kernel.session
        msg = s.msg("display_data", content={}, parent=ip.kernel.get_parent())
        parts = [s.pack(msg["header"]), s.pack(msg["parent_header"]), s.pack(msg["metadata"]), b"[" * 10**5 + b"]" * 10**5]
        ip.kernel.iopub_socket.send_multipart([b"display_data", DELIM, s.sign(parts), *parts])
        time.sleep(0.5)
        """,
        "correct",
        "last",
    ),
    "unstorable-outputs": (
        """
        from IPython.display import display
        deep = []
        for _ in range(300):
            deep = [deep]
        display({"application/json": deep, "text/plain": "deep"}, raw=True)
        display({"text/plain": 5}, raw=True)
        display({"image/png": {"not": "base64"}}, raw=True)
        print("after the unstorable outputs")
        """,
        "correct",
        "last",
    ),
    "display-update-flood": (
        """
        from IPython.display import display, update_display
        for _ in range(200):
            display("x", display_id="flood")
        for _ in range(20):
            update_display("y" * 100_000, display_id="flood")
        """,
        "correct",
        "last",
    ),
    "crash-flood-records": (
        """
        import pathlib
        import autograder.checks.ae_to_cvae as checks
        from autograder import probing
        folder = pathlib.Path(os.environ.get("GENLAB_PROBE_DIR", "."))
        for exercise in ["interpolate", "one_hot", "gaussian_kl"] + [f"flood{k}" for k in range(150)]:
            payload = {"exercise": exercise, "records": {}, "crash": "a long crash message " * 390}
            (folder / (exercise + ".pt")).write_bytes(probing.encode(payload))
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            setattr(checks, "probe_" + name, lambda f: None)
        """,
        "blank",
        "first",
    ),
    "record-bombs": (
        """
        import collections, io, pathlib, pickle, zipfile
        import autograder.checks.ae_to_cvae as checks
        from autograder import probing
        folder = pathlib.Path(os.environ.get("GENLAB_PROBE_DIR", "."))
        sparse = torch.sparse_coo_tensor(torch.zeros(2, 1, dtype=torch.long), torch.ones(1), (10**5, 10**5))
        (folder / "interpolate.pt").write_bytes(probing.encode({"records": {f"k{i}": sparse for i in range(200)}, "crash": None}))
        (folder / "one_hot.pt").write_bytes(probing.encode({"records": {"z": torch.zeros(1).expand(2**31)}, "crash": None}))
        class Bomb:
            def __reduce__(self):
                return bytearray, (4 * 2**30,)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"records": Bomb(), "crash": None}, protocol=2))
            zf.writestr("archive/version", "3")
        (folder / "gaussian_kl.pt").write_bytes(buffer.getvalue())
        for name in ("interpolate", "one_hot", "gaussian_kl"):
            setattr(checks, "probe_" + name, lambda f: None)
        """,
        "blank",
        "first",
    ),
    "connection-folder": (
        """
        import json, socket
        from ipykernel import get_connection_file
        info = json.load(open(get_connection_file()))
        run = os.path.dirname(info["ip"])
        for attempt in (
            lambda: open(os.path.join(run, "fill.bin"), "wb").write(b"x" * 2**20),
            lambda: open(os.path.join(os.path.dirname(run), "fill.bin"), "wb").write(b"x" * 2**20),
            lambda: [os.unlink(os.path.join(run, n)) for n in os.listdir(run)],
            lambda: socket.socket(socket.AF_UNIX).bind(info["ip"] + "-" + str(info["shell_port"])),
        ):
            try:
                attempt()
                print("connection folder: allowed")
            except OSError as exc:
                print("connection folder: refused", type(exc).__name__)
        """,
        "correct",
        "last",
    ),
    "user-namespace": (
        """
        import subprocess
        r = subprocess.run(["unshare", "-Ur", "id"], capture_output=True, text=True)
        print("unshare:", r.returncode, r.stdout, r.stderr)
        """,
        "correct",
        "last",
    ),
}


def _cell_of(nb: nbformat.NotebookNode, gid: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if notebooks.meta(c).get("grade_id") == gid)


def _forge_test_cell(nb):
    meta = {"nbgrader": {"grade": True, "solution": False, "locked": True, "points": 100, "grade_id": "free_points"}}
    nb.cells.append(new_code_cell("pass", metadata=meta))


def _flip_test_flags(nb):
    test = _cell_of(nb, "test_interpolate")
    test.metadata["nbgrader"].update(locked=False, solution=True, grade=False)
    test.source = "pass  # no test here"


def _mark_answer_graded(nb):
    _cell_of(nb, "one_hot").metadata["nbgrader"].update(grade=True, points=50)


def _duplicate_tests(nb):
    for gid in ("test_one_hot", "test_gaussian_kl"):
        copy = nbformat.from_dict(_cell_of(nb, gid))
        copy.source, copy.id = "pass  # a copy", f"copy-{gid}"
        nb.cells.insert(2, copy)


def _string_metadata(nb):
    _cell_of(nb, "interpolate").metadata["nbgrader"] = "not a mapping"


def _list_grade_id(nb):
    _cell_of(nb, "test_gaussian_kl").metadata["nbgrader"]["grade_id"] = ["a", "list"]


def _kernelspec(nb):
    nb.metadata.kernelspec = {"name": "evil", "display_name": "Evil", "language": "python"}


# Tampered notebooks: (built on, the change, its score: what the answer cells earn).
TAMPERED = {
    "tampered-forged-test-cell": ("blank", _forge_test_cell, 0),
    "tampered-flipped-flags": ("correct", _flip_test_flags, 10),
    "tampered-answer-marked-graded": ("correct", _mark_answer_graded, 10),
    "tampered-duplicated-tests": ("correct", _duplicate_tests, 10),
    "tampered-metadata-string": ("correct", _string_metadata, 10),
    "tampered-grade-id-list": ("correct", _list_grade_id, 10),
    "tampered-kernelspec": ("correct", _kernelspec, 10),
    "tampered-timestamp": ("correct", lambda nb: None, 10),  # its timestamp.txt cannot be read
}
# Files that are no notebook: set aside, the release graded in their place (0 points), the batch goes on.
MALFORMED = {
    "malformed-folder": None,
    "malformed-nbformat-99": json.dumps({"nbformat": 99, "nbformat_minor": 0, "metadata": {}, "cells": []}),
    "malformed-null": "null",
    "malformed-deep-json": "[" * 100_000 + "]" * 100_000,
    "malformed-not-json": "{'cells': ",
}


def build(code: str, base: str, where: str, release_nb, source_nb) -> nbformat.NotebookNode:
    """A submission: the blank or correct notebook with ``code`` first, last, as every answer, or in one answer."""
    nb = notebooks.fill(release_nb, source_nb) if base == "correct" else nbformat.from_dict(release_nb)
    code = textwrap.dedent(code).strip()
    answers = [c for c in nb.cells if notebooks.meta(c).get("solution")]
    if where == "first":
        nb.cells.insert(2, new_code_cell(code))
    elif where == "last":
        nb.cells.append(new_code_cell(code))
    elif where == "answers":  # the answer cells themselves try the trick
        for cell in answers:
            cell.source = code
    else:  # "in:<answer>": appended to one answer cell
        cell = next(c for c in answers if notebooks.meta(c)["grade_id"] == where.split(":")[1])
        cell.source += "\n" + code
    return nb


def fingerprint(root: Path) -> dict[str, str]:
    """Hashes of the course files a submission must not change."""
    paths = [
        root / "nbgrader_config.py",
        root / "canary-course.txt",
        root / "source" / "canary.txt",
        *sorted((root / "source").rglob("*.ipynb")),
        *sorted((root / "release").rglob("*")),
        *sorted((root / "assignments").glob("*")),
    ]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-course")
    (root / "nbgrader_config.py").write_text((ROOT / "nbgrader_config.py").read_text())
    (root / "assignments").mkdir()
    (root / "assignments" / f"{NAME}.toml").write_text(MANIFEST)
    (root / "source" / NAME).mkdir(parents=True)
    nbformat.write(source_notebook(), root / "source" / NAME / f"{NAME}.ipynb")
    release.release([NAME], root=root)
    home_canary, tmp_canary = Path.home() / ".genlab-canary", Path("/tmp") / f"genlab-canary-{os.getpid()}.txt"
    for path in (root / "canary-course.txt", root / "source" / "canary.txt", home_canary, tmp_canary):
        path.write_text(SECRET)

    release_nb = notebooks.read(root / "release" / NAME / f"{NAME}.ipynb")
    source_nb = notebooks.read(root / "source" / NAME / f"{NAME}.ipynb")
    fill = notebooks.fill
    places = {"{root}": str(root), "{home}": str(Path.home()), "{name}": NAME}
    subs: dict[str, nbformat.NotebookNode] = {
        "honest-correct-1": fill(release_nb, source_nb),
        "honest-blank": nbformat.from_dict(release_nb),
        "honest-partial": fill(
            release_nb, source_nb, {"gaussian_kl": ANSWERS["gaussian_kl"][0] + "    return mu_q.sum(-1)\n"}
        ),
    }
    subs["honest-correct-1"].cells[2].source = f"# my notes: {SECRET}\n" + subs["honest-correct-1"].cells[2].source
    places["{tmp_canary}"] = str(tmp_canary)
    for kind, (code, base, where) in ATTACKS.items():
        for key, value in places.items():
            code = code.replace(key, value)
        subs[kind] = build(code, base, where, release_nb, source_nb)
    for kind, (base, change, _) in TAMPERED.items():
        nb = fill(release_nb, source_nb) if base == "correct" else nbformat.from_dict(release_nb)
        change(nb)
        subs[kind] = nb
    subs["honest-correct-2"] = fill(release_nb, source_nb)
    for student, nb in subs.items():
        folder = root / "submitted" / student / NAME
        folder.mkdir(parents=True)
        # written as JSON: nbformat.write would validate, and repair, what the student broke
        (folder / f"{NAME}.ipynb").write_text(json.dumps(nb))
    (root / "submitted" / "tampered-timestamp" / NAME / "timestamp.txt").write_text("the night before the deadline")
    for kind, text in MALFORMED.items():
        folder = root / "submitted" / kind / NAME
        folder.mkdir(parents=True)
        if text is None:
            (folder / f"{NAME}.ipynb").mkdir()
        else:
            (folder / f"{NAME}.ipynb").write_text(text)
    # links planted in a submission folder itself
    links = root / "submitted" / "linked-files" / NAME
    links.mkdir(parents=True)
    nbformat.write(fill(release_nb, source_nb), links / f"{NAME}.ipynb")
    os.symlink(root / "source" / NAME / f"{NAME}.ipynb", links / "solutions.ipynb")
    os.symlink("/etc", links / "etc")
    os.link(root / "canary-course.txt", links / "hardlink.txt")
    os.mkfifo(links / "pipe")

    before = fingerprint(root)
    os.environ["GENLAB_CANARY"] = ENV_SECRET
    try:
        results = {r.student: r for r in grade.grade(NAME, jobs=2, root=root)}
    finally:
        del os.environ["GENLAB_CANARY"]
    yield root, results, before, home_canary, tmp_canary
    home_canary.unlink(missing_ok=True)
    tmp_canary.unlink(missing_ok=True)


def scores(root: Path) -> dict[str, float]:
    with Gradebook(gradebook_url(root)) as gb:
        out = {}
        for sub in gb.assignment_submissions(NAME):
            out[sub.student.id] = sum(g.score for nb in sub.notebooks for g in nb.grades if g.cell.cell_type == "code")
        return out


def test_the_batch_finishes_with_a_result_for_everyone(batch):
    root, results, *_ = batch
    assert set(results) == set(ATTACKS) | set(TAMPERED) | set(MALFORMED) | {
        "honest-correct-1",
        "honest-correct-2",
        "honest-blank",
        "honest-partial",
        "linked-files",
    }
    assert all(r.error is None for r in results.values()), {s: r.error for s, r in results.items() if r.error}


def test_honest_submissions_keep_every_point(batch):
    got = scores(batch[0])
    assert got["honest-correct-1"] == got["honest-correct-2"] == 10
    assert got["honest-blank"] == 0
    assert got["honest-partial"] == 5
    assert got["linked-files"] == 10  # graded, its links removed at intake


def test_no_attack_gains_a_point(batch):
    got = scores(batch[0])
    for kind, (_, base, _where) in ATTACKS.items():
        honest = 10 if base == "correct" else 0
        assert got[kind] <= honest, f"{kind} scored {got[kind]} (honest: {honest})"
    # attacks placed after the tests keep what they earned before; a timed-out cell fails alone
    for kind in (
        "fork-bomb",
        "memory-bomb-forked",
        "disk-fill",
        "huge-text-output",
        "huge-html-output",
        "many-images",
        "endless-cell",
        "endless-ignoring-interrupts",
        "exit",
        "segfault",
        "kill-everything",
        "stderr-warnings",
        "html-injection",
        "bad-signature",
        "deep-json-message",
        "unstorable-outputs",
        "display-update-flood",
        "connection-folder",
        "user-namespace",
    ):
        assert got[kind] == 10, f"{kind}: {got[kind]} (the attack came after the tests)"


def test_no_canary_reaches_outputs_feedback_or_grades(batch):
    root, *_ = batch
    texts = {
        p: p.read_text(errors="replace")
        for p in [*root.glob("autograded/*/*/*.ipynb"), *root.glob("feedback/*/*/*"), root / "grades.csv"]
        if p.is_file()
    }
    assert len([p for p in texts if p.suffix == ".html"]) >= len(ATTACKS)
    for path, text in texts.items():
        if "honest-correct-1" in str(path):
            continue  # the canary is that student's own text
        assert SECRET not in text, f"{path} holds a canary"
        assert ENV_SECRET not in text, f"{path} holds the grader's environment"
    for path in root.glob("feedback/linked-files/*/*"):
        assert path.suffix in (".html",), f"feedback copied {path.name}"


def test_the_course_is_unchanged_and_nothing_is_left_running(batch):
    root, _, before, home_canary, tmp_canary = batch
    assert fingerprint(root) == before
    assert home_canary.read_text() == SECRET and tmp_canary.read_text() == SECRET
    assert not Path("/tmp/genlab-pwned").exists()
    # A task reports as soon as its result is stored, while its grading process may still be exiting.
    deadline = time.monotonic() + 60
    while (
        left := [p for p in Path("/proc").glob("[0-9]*") if _uid(p) >= sandbox.UID_BASE]
    ) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, f"processes of sandboxed submissions are still running a minute after the batch: {left}"


def test_feedback_explains_what_stopped_a_kernel(batch):
    root, *_ = batch
    page = (root / "feedback" / "endless-cell" / NAME / f"{NAME}.html").read_text()
    assert "CellTimeoutError" in page or "Timeout" in page
    page = (root / "feedback" / "exit" / NAME / f"{NAME}.html").read_text()
    assert "KernelDied" in page and "kernel died" in page
    shown = graded_outputs(root, "memory-bomb-forked")
    assert any("1536 MB" in text and "memory" in text for text in shown), shown  # the limit, named
    graded = (root / "autograded" / "endless-ignoring-interrupts" / NAME / f"{NAME}.ipynb").read_text()
    assert "did not stop when interrupted" in graded


def _uid(proc: Path) -> int:
    try:
        for line in (proc / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


def test_a_kernel_that_never_starts_leaves_the_submission_ungraded_not_zero(batch):
    root = batch[0]
    folder = root / "submitted" / "unlucky" / NAME
    folder.mkdir(parents=True)
    nbformat.write(
        notebooks.read(root / "submitted" / "honest-correct-2" / NAME / f"{NAME}.ipynb"), folder / f"{NAME}.ipynb"
    )
    proc = release.nbgrader(
        "autograde",
        NAME,
        "--student",
        "unlucky",
        "--force",
        "--Execute.kernel_name=no-such-kernel",
        "--GradeExecute.start_attempts=2",
        root=root,
        check=False,
    )
    assert proc.returncode != 0 and "did not start" in proc.stdout + proc.stderr
    release.nbgrader("export", root=root)
    rows = {line.split(",")[3]: line.split(",") for line in (root / "grades.csv").read_text().splitlines()[1:]}
    assert rows["unlucky"][9] == "" and rows["unlucky"][11] == "ungraded" and "did not start" in rows["unlucky"][12]
    assert rows["honest-correct-2"][11] == "graded"


# ----------------------------------------------------------------------------- issue 22


def feedback_page(root: Path, student: str) -> str:
    return (root / "feedback" / student / NAME / f"{NAME}.html").read_text()


def graded_notebook(root: Path, student: str) -> str:
    return (root / "autograded" / student / NAME / f"{NAME}.ipynb").read_text()


def graded_outputs(root: Path, student: str) -> list[str]:
    """What the graded notebook's cells show: stream text, error values and plain-text data (not the code,
    which names what it tries, and not tracebacks, which repeat the error value)."""
    nb = nbformat.reads(graded_notebook(root, student), as_version=4)
    shown = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("evalue") or out.get("data", {}).get("text/plain", "")
            shown.append("".join(text) if isinstance(text, list) else str(text))
    return shown


def test_tampered_and_malformed_notebooks_are_graded_on_their_answers_with_notes(batch):
    root = batch[0]
    got = scores(root)
    for kind, (_, _, earned) in TAMPERED.items():
        assert got[kind] == earned, f"{kind}: {got[kind]} (its answers earn {earned})"
    for kind in MALFORMED:
        assert got[kind] == 0, f"{kind}: the release is graded in its place"
        assert "could not be read as a notebook" in feedback_page(root, kind)
    assert "had been changed; it was restored" in feedback_page(root, "tampered-flipped-flags")
    assert "free_points" in feedback_page(root, "tampered-forged-test-cell")
    assert "counts as submitted on time" in feedback_page(root, "tampered-timestamp")
    assert "it was run with the course" in feedback_page(root, "tampered-kernelspec")
    with Gradebook(gradebook_url(root)) as gb:  # a forged or re-flagged cell adds no points to the assignment
        assert gb.find_assignment(NAME).max_score == 10


def test_every_byte_written_from_a_submission_is_capped(batch):
    root, results, *_ = batch
    for student, result in results.items():
        for path in (
            root / "autograded" / student / NAME / f"{NAME}.ipynb",
            root / "feedback" / student / NAME / f"{NAME}.html",
        ):
            assert path.stat().st_size <= OUTPUT_CAP, f"{path}: {path.stat().st_size} bytes"
        row = status.get(gradebook_url(root), NAME, student, result.digest)
        stored = status.notebook_bytes(row) or b""
        assert len(stored) <= OUTPUT_CAP, f"{student}: the status row stores {len(stored)} bytes"
    assert "display not updated" in graded_notebook(root, "display-update-flood")
    for student in ("huge-text-output", "huge-html-output"):  # many-images stays under the cap (checked above)
        assert "output cut" in graded_notebook(root, student), student
    flood = graded_outputs(root, "crash-flood-records")
    assert sum("could not be read" in text for text in flood) == 3, flood  # each test fails, in a few words
    assert max(map(len, flood)) < 2100, "a verdict is cut at VerifyProbes.max_message"


def test_a_message_or_an_output_nobody_can_read_fails_only_its_cell(batch):
    root = batch[0]
    for student, why in (("bad-signature", "Invalid Signature"), ("deep-json-message", "RecursionError")):
        graded = graded_notebook(root, student)
        assert "UnreadableMessage" in graded and why in graded, student
    graded = graded_notebook(root, "unstorable-outputs")
    assert "nested more than 32 deep" in graded and "not a valid display_data output" in graded
    assert "after the unstorable outputs" in graded


def test_record_bombs_fail_their_own_tests_with_a_message(batch):
    root = batch[0]
    shown = graded_outputs(root, "record-bombs")
    assert sum("its record could not be read" in text for text in shown) == 3, "each bomb fails its test, alone"


def test_no_page_made_from_a_submission_carries_a_script_of_its_own(batch):
    root, results, *_ = batch
    for student in results:
        page = feedback_page(root, student)
        assert page.count("<script") == 1, f"{student}: {page.count('<script')} scripts in its feedback"
        assert "Content-Security-Policy" in page
    page = feedback_page(root, "html-injection")
    assert not re.search(r"<[^<>]*\son\w+=", page), "an event handler reached the page"
    assert not re.search(r"<(iframe|meta http-equiv=.refresh)", page, re.I)
    assert not re.search(r"""<a[^>]*href=["']?javascript:""", page, re.I)


def test_the_kernel_reaches_nothing_of_the_host(batch):
    root = batch[0]
    shown = "\n".join(graded_outputs(root, "connection-folder"))
    assert "connection folder: allowed" not in shown and shown.count("connection folder: refused") == 4, shown
    graded = graded_notebook(root, "user-namespace")
    assert "unshare: 1" in graded and "uid=0" not in graded
