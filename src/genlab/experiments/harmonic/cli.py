"""The command line: ``python -m genlab.experiments.harmonic``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import genlab
from genlab.experiments import provenance
from genlab.experiments.harmonic.attack import run_attack
from genlab.experiments.harmonic.defects import run_defects
from genlab.experiments.harmonic.grid import run_grid
from genlab.experiments.harmonic.plan import LATENT, Plan, data_title, make_plan
from genlab.experiments.harmonic.sinc_study import SINC_VARIANTS, sinc_encoder_study, sinc_study_provenance
from genlab.train import cache_dir


def write_provenance(
    out_dir: Path, argv: Sequence[str], seconds: Mapping[str, float], plan: Plan, data: str | None = None
) -> Path:
    """A README beside the tables: the command, the commit and the machine that made them, and the data
    they measured (``data``: what was loaded, stand-ins named as such; default: the plan's data sets)."""
    lines = [
        f"# Results of the {plan.profile} profile",
        "",
        f"- command: `python -m genlab.experiments.harmonic {' '.join(argv)}`",
        f"- commit: {provenance.git_commit()}",
        f"- machine: {provenance.machine(genlab.device())}; CPU {provenance.cpu_model()}",
        f"- data: {data or ', '.join(data_title(name) for name in plan.datasets)}",
        f"- plan: datasets {', '.join(plan.datasets)}; seeds {', '.join(map(str, plan.seeds))}; "
        f"epochs {dict(plan.epochs)}; hidden width {plan.hidden}",
        f"- time: {sum(seconds.values()) / 60:.0f} min wall clock ("
        + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
        + ")",
        "",
    ]
    lines += [f"- {n}" for n in plan.notes]
    path = out_dir / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def default_cache() -> Path:
    """Where this chapter's checkpoints are kept by default (:func:`genlab.train.cache_dir`)."""
    return cache_dir("harmonic")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m genlab.experiments.harmonic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=(*genlab.runtime.PROFILES, "reference"), default=genlab.profile().name)
    parser.add_argument("--datasets", nargs="+", choices=sorted(LATENT))
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--out", default="results/harmonic")
    parser.add_argument("--cache", default=str(default_cache()), help="checkpoint folder (reused when configs match)")
    parser.add_argument("--defects", action="store_true", help="also re-create the 2022 report's defects")
    parser.add_argument("--no-attack", action="store_true", help="skip the maximum-damage attack")
    parser.add_argument(
        "--sinc-encoder",
        nargs="*",
        metavar="VARIANT",
        help="instead of the grid, the sinc encoder study (every variant, or those named; "
        f"known: {', '.join(repr(v.name) for v in SINC_VARIANTS)})",
    )
    parser.add_argument(
        "--sigma-n",
        nargs="+",
        type=float,
        default=[0.0],
        help="σ_N values of the sinc encoder study (for the variants that name none of their own)",
    )
    parser.add_argument(
        "--lipsdp",
        nargs="*",
        default=[],
        metavar="VARIANT",
        help="variants of the sinc encoder study that also get LipSDP-neuron (slow)",
    )
    provenance.add_dirty_flag(parser)
    args = parser.parse_args(argv)
    provenance.require_clean(args.allow_dirty)
    plan = make_plan(args.profile, datasets=args.datasets, seeds=args.seeds)
    if args.sinc_encoder is not None:
        known = {v.name: v for v in SINC_VARIANTS}
        unknown = sorted(set(args.sinc_encoder) - set(known))
        if unknown:
            parser.error(f"unknown variants {unknown}")
        variants = [known[n] for n in args.sinc_encoder] or list(SINC_VARIANTS)
        out_dir = Path(args.out) / "sinc-encoder"
        t0, load0, cpu0 = time.perf_counter(), provenance.load_average(), time.process_time()
        rows = sinc_encoder_study(plan, out_dir, args.cache, variants, args.sigma_n, lipsdp=args.lipsdp)
        import shlex  # variant names hold spaces: the README's command must run as written

        readme = write_provenance(out_dir, [shlex.quote(a) for a in argv], {"study": time.perf_counter() - t0}, plan)
        with open(readme, "a") as f:
            f.write("\n".join(sinc_study_provenance(rows, load0, time.process_time() - cpu0)) + "\n")
        return 0
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    grid = run_grid(plan, args.out, args.cache)
    seconds["grid"] = time.perf_counter() - t0
    print(
        f"grid: {len(grid.runs)} networks, {grid.trained} trained, {grid.reused} from the cache, {grid.seconds:.1f} s"
    )
    if not args.no_attack and plan.attack_dataset in plan.datasets:
        t1 = time.perf_counter()
        run_attack(plan, args.out, args.cache)
        seconds["attack"] = time.perf_counter() - t1
    if args.defects:
        t1 = time.perf_counter()
        run_defects(plan, args.out, args.cache)
        seconds["defects"] = time.perf_counter() - t1
    out_dir = Path(args.out) / plan.profile
    loaded = dict.fromkeys(data_title(r["dataset"], r["stand_in"]) for r in grid.runs)
    write_provenance(out_dir, argv, seconds, plan, ", ".join(loaded))
    print(f"tables in {out_dir}: " + ", ".join(sorted(p.name for p in out_dir.iterdir())))
    return 0
