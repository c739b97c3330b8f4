"""LipSDP: the chordal (structured) formulation against the single dense LMI, and ECLipsE-Fast.

    python benchmarks/bench_lipschitz.py [--study] [--reps N]

Networks (sigmoid MLPs, nn.Linear's default initialisation, seed 0), named by layer widths:
1-16-16-1 and 64-64-64-64-256 (input 64, hidden 64, 64, 64, output 256). For each,
``genlab.lipschitz.lipsdp_report`` with ``method="chordal"`` (the default: one LMI per pair of
consecutive layers) and ``method="dense"`` (one LMI over all neurons), both with the same solver
settings (SCS, eps 1e-4), the same certificate and the same polish; plus ECLipsE-Fast from the
``eclipse-nn`` package (closed form, Xu & Sivaranjani, NeurIPS 2024) when it is installed, and the
product-of-norms bound. Times are wall-clock seconds of the whole call, the median of ``--reps``
runs, after one warm-up call on a tiny network (the first call of a process pays for importing the
solver interfaces; its time is printed too).

The first line is the headline ``lipsdp_structured_vs_dense: <dense / structured>x`` on the
64-64-64-64-256 network; the raw figures follow, indented. ``--study`` adds the study's encoder
(3072-256-256-256-64) and decoder (64-256-256-256-3072) with the structured method (1-2 minutes
each on a 2-core CPU); ``--study-dense`` also solves the encoder's dense LMI (measured once:
724 s and 1825 SCS iterations against 66 s and 325 iterations structured, bounds 0.0047376 and
0.0047336). torch (ECLipsE-Fast's linear algebra; LipSDP's own torch work is
single-threaded anyway) runs on ``--threads`` threads, default 1: on a busy 2-core machine a second
thread slows small dense products down several times.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import timed
from torch import nn

from genlab.lipschitz import eclipse_fast_bound, lipsdp_report, spectral_product_bound


def sigmoid_mlp(widths: list[int], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def eclipse_fast(net: nn.Module):
    """(seconds, bound) of ECLipsE-Fast, or (None, reason) if it cannot run."""
    try:
        return timed(lambda: eclipse_fast_bound(net), 3)
    except ImportError as exc:
        return None, str(exc)


def describe(widths: list[int]) -> str:
    return "-".join(str(w) for w in widths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="also the study-sized encoder and decoder")
    parser.add_argument(
        "--study-dense", action="store_true", help="with --study: also the dense LMI on the encoder (~12 min)"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    # warm-up: the first call of a process imports cvxpy's solver interfaces and SCS
    start = time.perf_counter()
    lipsdp_report(sigmoid_mlp([2, 3, 2]))
    cold = time.perf_counter() - start

    rows = []
    headline = None
    for widths in ([1, 16, 16, 1], [64, 64, 64, 64, 256]):
        net = sigmoid_mlp(widths)
        t_struct, r_struct = timed(lambda: lipsdp_report(net, method="chordal"), args.reps)
        t_dense, r_dense = timed(lambda: lipsdp_report(net, method="dense"), args.reps)
        t_ecl, ecl = eclipse_fast(net)
        rows.append((widths, net, t_struct, r_struct, t_dense, r_dense, t_ecl, ecl))
        headline = t_dense / t_struct

    print(f"lipsdp_structured_vs_dense: {headline:.2f}x")
    print(
        f"  (times: median of {args.reps}; SCS eps 1e-4 + certificate + polish; torch threads "
        f"{torch.get_num_threads()}; "
        f"first call of the process, 2-3-2 net: {cold:.2f} s)"
    )
    for widths, net, t_struct, r_struct, t_dense, r_dense, t_ecl, ecl in rows:
        print(f"  net {describe(widths)} (sigmoid)")
        print(
            f"    structured (chordal): {t_struct:8.3f} s  bound {r_struct.bound:.6g}  "
            f"LMIs {r_struct.block_sizes}  SCS iterations {r_struct.iterations}  "
            f"solver's own value {r_struct.solver_bound:.6g}"
        )
        print(
            f"    dense:                {t_dense:8.3f} s  bound {r_dense.bound:.6g}  "
            f"LMIs {r_dense.block_sizes}  SCS iterations {r_dense.iterations}  "
            f"solver's own value {r_dense.solver_bound:.6g}"
        )
        print(f"    dense / structured:   {t_dense / t_struct:8.2f}x")
        if t_ecl is None:
            print(f"    ECLipsE-Fast:         skipped: {ecl}")
        else:
            print(f"    ECLipsE-Fast:         {t_ecl:8.4f} s  bound {ecl:.6g}  ({ecl / r_struct.bound:.3f} x LipSDP)")
        print(f"    product of norms:     bound {spectral_product_bound(net):.6g}")

    if args.study:
        for widths in ([3072, 256, 256, 256, 64], [64, 256, 256, 256, 3072]):
            net = sigmoid_mlp(widths)
            start = time.perf_counter()
            r = lipsdp_report(net)
            elapsed = time.perf_counter() - start
            print(f"  study net {describe(widths)} (sigmoid)")
            print(
                f"    structured (chordal): {elapsed:8.1f} s  bound {r.bound:.6g}  LMIs {r.block_sizes}  "
                f"input rank {r.input_rank}  SCS iterations {r.iterations} ({r.solve_time:.1f} s in SCS)  "
                f"solver's own value {r.solver_bound:.6g}"
            )
            if args.study_dense and widths[0] == 3072:
                start = time.perf_counter()
                rd = lipsdp_report(net, method="dense")
                dense = time.perf_counter() - start
                print(
                    f"    dense:                {dense:8.1f} s  bound {rd.bound:.6g}  LMIs {rd.block_sizes}  "
                    f"SCS iterations {rd.iterations}  ({dense / elapsed:.1f}x the structured time)"
                )
            t_ecl, ecl = eclipse_fast(net)
            if t_ecl is None:
                print(f"    ECLipsE-Fast:         skipped: {ecl}")
            else:
                print(f"    ECLipsE-Fast:         {t_ecl:8.4f} s  bound {ecl:.6g}  ({ecl / r.bound:.3f} x LipSDP)")
            print(f"    product of norms:     bound {spectral_product_bound(net):.6g}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
