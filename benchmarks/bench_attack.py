"""The maximum-damage attack on one CIFAR-sized input: projected gradient ascent vs scipy's L-BFGS-B.

    python benchmarks/bench_attack.py [--reps N] [--threads N] [--radius C]

Model: the study's sigmoid MLP VAE shape -- encoder mean 3072-256-256-256-64, decoder mean
64-256-256-256-3072 with a linear output -- with nn.Linear's default initialisation (seed 0) and
the weights after each sigmoid multiplied by 4, so that the sigmoid layers are not contracting
(a trained model's damage is of that order, a freshly initialised one is ~1e-4). Input: one
random 3x32x32 image in [0, 1]; radius C = 10 (the paper's smaller budget).

- PGD: ``genlab.attacks.maximum_damage_attack`` with its defaults (at most 50 steps, 4 restarts
  run as one batch, early stop when converged).
- L-BFGS-B: ``genlab.attacks.lbfgs_damage`` (scipy, through d = C tanh(|v|) v / |v|, at most 200
  iterations), the kind of solver the 2022 reproduction used (MATLAB fmincon: 14 hours a model),
  with the same number of restarts (one scipy run each).

Both run in float64: L-BFGS-B needs exact gradients (in float32 its line search gives up early,
at a lower damage, which would flatter its time). Each is run ``--reps`` times after a warm-up;
the medians are reported. The first line is the headline ``max_damage_attack_vs_lbfgs: <L-BFGS-B
time / PGD time>x`` at 4 restarts each; the damages and times follow, indented, with one restart
each, and PGD's time in float32, its usual setting (target: under 1 s on a 2-core CPU). torch runs
on ``--threads`` threads (default 1: on a busy 2-core machine a second thread slows these
batch-of-one products down several times; ``--threads 0`` keeps torch's default).
"""

from __future__ import annotations

import argparse

import torch
from common import timed
from torch import nn

from genlab.attacks import lbfgs_damage, maximum_damage_attack

SHAPE = (3, 32, 32)


def sigmoid_mlp(widths: list[int], gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b)
        if i > 0:
            with torch.no_grad():
                lin.weight.mul_(gain)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--radius", type=float, default=10.0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    enc_net = sigmoid_mlp([d, 256, 256, 256, 64], gain=4.0).eval()
    dec_net = sigmoid_mlp([64, 256, 256, 256, d], gain=4.0).eval()

    def encoder(x):
        return enc_net(x.flatten(1))

    def decoder(z):
        return dec_net(z).view(-1, *SHAPE)

    x32 = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(1))
    results = {}
    for dtype in (torch.float32, torch.float64):
        enc_net.to(dtype)
        dec_net.to(dtype)
        x = x32.to(dtype)
        for restarts in (4, 1):
            results["pgd", dtype, restarts] = timed(
                lambda: maximum_damage_attack(
                    encoder, decoder, x, args.radius, restarts=restarts, generator=torch.Generator().manual_seed(2)
                ),
                args.reps,
                warmup=True,
            )
            if dtype == torch.float64:
                results["lbfgs", dtype, restarts] = timed(
                    lambda: lbfgs_damage(
                        encoder, decoder, x, args.radius, restarts=restarts, generator=torch.Generator().manual_seed(3)
                    ),
                    args.reps,
                    warmup=True,
                )

    def line(label, key):
        t, (delta, damage) = results[key]
        return f"  {label:<34} {t:7.3f} s  damage {float(damage):.6g}  |delta| {float(delta.flatten(1).norm()):.6g}"

    f64 = torch.float64
    ratio = results["lbfgs", f64, 4][0] / results["pgd", f64, 4][0]
    print(f"max_damage_attack_vs_lbfgs: {ratio:.2f}x")
    print(
        f"  input 1x{'x'.join(map(str, SHAPE))}, radius {args.radius:g}, torch threads {torch.get_num_threads()}, "
        f"median of {args.reps}"
    )
    print(line("PGD, 4 restarts, float64:", ("pgd", f64, 4)))
    print(line("L-BFGS-B, 4 restarts, float64:", ("lbfgs", f64, 4)))
    print(line("PGD, 1 restart, float64:", ("pgd", f64, 1)))
    print(line("L-BFGS-B, 1 restart, float64:", ("lbfgs", f64, 1)))
    print(f"  L-BFGS-B / PGD time, 1 restart each: {results['lbfgs', f64, 1][0] / results['pgd', f64, 1][0]:.2f}x")
    t32 = results["pgd", torch.float32, 4][0]
    print(
        line("PGD, 4 restarts, float32:", ("pgd", torch.float32, 4))
        + f"  (target < 1 s: {'met' if t32 < 1 else 'MISSED'})"
    )
    print(line("PGD, 1 restart, float32:", ("pgd", torch.float32, 1)))


if __name__ == "__main__":
    main()
