"""The reference run of a chapter whose data are available offline: its source notebook in the full profile.

    python book/reference_run.py vae_theory [--out results/vae_theory/reference]

VAE theory trains nothing and reads only Fashion-MNIST, in every profile; its full profile (all 60 000
images, Monte-Carlo sample sizes up to 2^20, more latent and gradient dimensions) is the longer run the
smoke profile shortens. This executes the source notebook (solutions and hidden tests included, in a
scratch folder) with ``GENLAB_PROFILE=full`` and keeps what the book can show: every figure as
``<cell id>-<n>.png``, the printed and tabulated outputs in ``outputs.md``, and a README with the
command, commit, machine and time (:func:`genlab.experiments.reference.write_readme`).
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
sys.path.insert(0, str(BOOK))

from build import FIGURE_NOTES  # noqa: E402

from autograder import manifest, notebooks  # noqa: E402
from genlab.experiments import provenance, reference  # noqa: E402


def execute_full(name: str) -> tuple[nbformat.NotebookNode, float]:
    """The chapter's source notebook executed in the full profile, and the seconds it took."""
    from nbclient import NotebookClient

    nb = notebooks.read(manifest.load(name).source)
    nb.cells.insert(0, nbformat.v4.new_code_cell(FIGURE_NOTES))
    env = {**os.environ, "GENLAB_PROFILE": "full", "GENLAB_BATCH": "1"}
    env.pop("MPLBACKEND", None)  # the kernel must choose its inline backend, or there are no figures
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"genlab-reference-{name}-") as cwd:
        env["GENLAB_CACHE"] = str(Path(cwd) / "cache")
        NotebookClient(nb, timeout=3600, kernel_name="python3").execute(env=env, cwd=cwd)
    nb.cells.pop(0)
    return nb, time.perf_counter() - start


def save_outputs(nb: nbformat.NotebookNode, out: Path) -> list[str]:
    """Write the figures and a Markdown record of the given cells' outputs; the names of the files."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    record, files = [], []
    for cell in nb.cells:
        if cell.cell_type != "code" or notebooks.meta(cell).get("grade") or notebooks.meta(cell).get("solution"):
            continue
        if "reference-run" in cell.metadata.get("tags", []):  # the previous reference run, shown by the chapter
            continue
        texts = []
        for k, output in enumerate(cell.get("outputs", [])):
            data = output.get("data", {})
            if "image/png" in data:
                files.append(f"{cell.id}-{k}.png")
                (out / files[-1]).write_bytes(base64.b64decode(data["image/png"]))
                texts.append(f"![figure]({files[-1]})")
            elif "text/html" in data:
                texts.append(re.sub(r"\s+", " ", "".join(data["text/html"])))
            elif output.get("output_type") == "stream" and output.get("name") == "stdout":
                texts.append("```\n" + "".join(output["text"]).rstrip() + "\n```")
        if texts:
            record += [f"## cell {cell.id}", "", *texts, ""]
    (out / "outputs.md").write_text("\n".join(record))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", choices=["vae_theory"], help="a chapter whose full profile runs offline")
    parser.add_argument("--out", type=Path, help="default: results/<chapter>/reference")
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    out = args.out or ROOT / "results" / args.chapter / reference.PROFILE
    load = provenance.load_average()
    nb, seconds = execute_full(args.chapter)
    files = save_outputs(nb, out)
    reference.write_readme(
        out,
        title=f"Reference run of the chapter {args.chapter}: its full profile",
        command=f"python book/reference_run.py {args.chapter}",
        data="Fashion-MNIST (the chapter's own data in every profile), all 60 000 training and 10 000 test images",
        settings=["the source notebook executed with GENLAB_PROFILE=full, solutions included"],
        seconds={"execution": seconds},
        load_average=[load, provenance.load_average()],
        notes=[f"Files: outputs.md (every given cell's output, in order) and {len(files)} figures named by cell id."],
    )
    shutil.rmtree(out / "__pycache__", ignore_errors=True)
    print(f"results in {out}: {len(files)} figures, outputs.md, README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
