"""``make release``: the student versions of every assignment and the student edition of genlab.

    python -m autograder.release [assignment ...]

Runs ``nbgrader generate_assignment`` for each assignment into release/, builds
release/genlab-<version>+student-py3-none-any.whl (the package with every graded reference
body replaced by ``raise NotImplementedError``), then refuses to finish if a solution line, a
hidden-test line or a reference line is found in release/.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from autograder import manifest, notebooks

ROOT = manifest.ROOT
# genlab as this process imports it: the course's src/genlab, or the copy a Ray task of a run on a
# cluster carries (its runtime_env) to a worker that has no course folder
_GENLAB = importlib.util.find_spec("genlab")
PACKAGE = Path(_GENLAB.origin).parent if _GENLAB is not None and _GENLAB.origin else ROOT / "src" / "genlab"
WITHHELD = 'raise NotImplementedError("graded exercise: write it in the chapter notebook")'
# Fixed zip timestamps keep the committed wheel byte-identical when nothing changed.
ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def nbgrader(*args: str, root: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    """Run an nbgrader command for the course in ``root`` with this interpreter's tools on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [os.path.join(bin_dir, "nbgrader"), *args, f"--CourseDirectory.root={root}"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def strip_reference(text: str) -> str:
    """Replace each ``# BEGIN REFERENCE`` region with one ``raise NotImplementedError``."""
    lines = text.splitlines()
    out, skipping = [], False
    for line in lines:
        stripped = line.strip()
        if stripped == notebooks.BEGIN_REFERENCE:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + WITHHELD)
            skipping = True
        elif stripped == notebooks.END_REFERENCE:
            skipping = False
        elif not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def student_sources() -> dict[str, bytes]:
    """The student edition of genlab: every module, graded bodies replaced, by path (``genlab/...``)."""
    return {
        str(path.relative_to(PACKAGE.parent)): strip_reference(path.read_text()).encode()
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def kernel_site() -> Path:
    """A folder for a grading kernel's ``PYTHONPATH``: the student edition and the probes, nothing else.

    The hidden tests import ``autograder.checks.<assignment>``: the kernel gets those modules and
    ``autograder/probing.py`` stripped like the package, so a grader-only helper of a check (a
    density for a diagnosis, say) is withheld when its body sits between REFERENCE markers. The
    folder is named after its content and made once per machine (atomically, so parallel graders
    can share it).
    """
    files = student_sources()
    grading = ROOT / "autograder"
    for path in [grading / "__init__.py", grading / "probing.py", *sorted((grading / "checks").glob("*.py"))]:
        files[str(path.relative_to(ROOT))] = strip_reference(path.read_text()).encode()
    digest = hashlib.sha256(b"".join(name.encode() + b"\0" + data for name, data in sorted(files.items())))
    parent = Path(tempfile.gettempdir()) / "genlab-kernel-site"
    parent.mkdir(mode=0o755, exist_ok=True)
    site = parent / digest.hexdigest()[:20]
    if site.is_dir():
        return site
    tmp = Path(tempfile.mkdtemp(dir=parent))
    for name, data in files.items():
        target = tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        os.chmod(folder, 0o755)
    for file in (p for p in tmp.rglob("*") if p.is_file()):
        os.chmod(file, 0o644)
    try:
        os.rename(tmp, site)
    except OSError:  # another grader made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return site


# The package's extras a student may install with the wheel (the others are the course team's tools).
STUDENT_EXTRAS = ("lipschitz",)


def student_extras(project: dict) -> list[str]:
    """The wheel's METADATA lines for :data:`STUDENT_EXTRAS`: ``pip install 'genlab-...whl[lipschitz]'``."""
    lines = []
    for extra in STUDENT_EXTRAS:
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {dep}; extra == "{extra}"' for dep in project["optional-dependencies"][extra]]
    return lines


def student_wheel(out_dir: Path) -> Path:
    """Write the student edition of genlab as a wheel and return its path."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = f"{project['version']}+student"
    dist_info = f"genlab-{version}.dist-info"
    files = student_sources()
    metadata = [
        "Metadata-Version: 2.1",
        "Name: genlab",
        f"Version: {version}",
        "Summary: genlab, student edition: graded exercises are left to the chapter notebooks",
        f"Requires-Python: {project['requires-python']}",
        *(f"Requires-Dist: {dep}" for dep in project["dependencies"]),
        *student_extras(project),
    ]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: genlab-release\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()

    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"genlab-{version}-py3-none-any.whl"
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    os.replace(tmp, wheel)
    for old in out_dir.glob("genlab-*.whl"):
        if old != wheel:
            old.unlink()
    return wheel


def release_texts(release_dir: Path) -> dict[Path, str]:
    """Every text a student receives: released notebooks and files, and the wheel's members."""
    texts: dict[Path, str] = {}
    for path in sorted(release_dir.rglob("*")):
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    texts[path / name] = zf.read(name).decode(errors="replace")
        elif path.is_file():
            texts[path] = path.read_text(errors="replace")
    return texts


def leaks(release_dir: Path, assignments: list[manifest.Manifest], root: Path = ROOT) -> list[str]:
    """Secret lines (solutions, hidden tests, reference code) found in ``release_dir``."""
    secrets = notebooks.reference_lines(PACKAGE.rglob("*.py"))
    for m in assignments:
        secrets |= notebooks.secret_lines(notebooks.read(m.source_at(root)))
    # A line the student edition ships anyway (``optimizer.step()`` in the training harness) is no secret.
    shipped = {
        line.strip() for path in PACKAGE.rglob("*.py") for line in strip_reference(path.read_text()).splitlines()
    }
    secrets -= shipped
    return [
        f"{path.relative_to(release_dir)}: {line}"
        for path, text in release_texts(release_dir).items()
        for line in notebooks.find_leaks(text, secrets)
    ]


def release(names: list[str] | None = None, root: Path = ROOT) -> list[Path]:
    """Generate the student versions of ``names`` (default: every manifest) under root/release."""
    assignments = [manifest.load(n, root) for n in names] if names else manifest.all_manifests()
    made = []
    for m in assignments:
        nbgrader("generate_assignment", m.name, "--force", root=root)
        made.append(root / "release" / m.name / m.notebook)
    made.append(student_wheel(root / "release"))
    found = leaks(root / "release", assignments, root)
    if found:
        raise RuntimeError("secret lines in release/ (fix the source markers):\n" + "\n".join(found[:20]))
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="assignment names (default: all manifests)")
    args = parser.parse_args(argv)
    for path in release(args.assignments or None):
        print(f"released {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
