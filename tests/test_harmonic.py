"""The Lipschitz chapter: the fixed-sigma VAE's pieces, the runner (grid, cache, tables, verdicts), the checks."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from autograder import probing
from autograder.checks import harmonic as checks
from genlab import lipschitz
from genlab.experiments import harmonic as R
from genlab.experiments.harmonic_reference import PAPER, REPRO_2022
from genlab.models import harmonic as H
from tests.verdicts import Notebook, coverage_gaps, unstable_verdicts


@pytest.fixture(scope="module")
def tiny() -> R.Plan:
    """A grid that trains 12 small sinc networks in a few seconds."""
    return replace(
        R.make_plan("smoke", datasets=["sinc"], seeds=[0, 1]),
        epochs={"sinc": 1},
        train_size={"sinc": 256},
        hidden=8,
        lower_points=4,
        lower_steps=5,
        attack_dataset="sinc",
        attack_points=1,
        attack_radii=(1.0, 2.0),
        attack_steps=5,
        attack_restarts=1,
        lbfgs_iters=5,
        defect_seeds=(0,),
        defect_dataset="sinc",
    )


# ----------------------------------------------------------------------------------------------
# the model's pieces


def test_fixed_sigma_kl_matches_the_closed_form_and_monte_carlo():
    torch.manual_seed(0)
    mu = torch.randn(4, 3, dtype=torch.float64)
    for sigma in (0.1, 0.5, 1.0, 2.0):
        got = H.fixed_sigma_kl(mu, sigma)
        want = kl_divergence(Normal(mu, sigma), Normal(0.0, 1.0)).sum(-1)
        assert torch.allclose(got, want, rtol=1e-12)
        # Monte Carlo: E_q[log q(z) - log p(z)] with many samples
        z = mu + sigma * torch.randn(200_000, *mu.shape, dtype=torch.float64)
        mc = (Normal(mu, sigma).log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1).mean(0)
        assert torch.allclose(got, mc, atol=0.02 + 0.01 * got.abs().max().item())
    assert torch.allclose(H.fixed_sigma_kl(torch.zeros(2, 5), 1.0), torch.zeros(2))


def test_sample_latent_scales_by_sigma_not_its_square():
    torch.manual_seed(1)
    mu = torch.full((100_000, 1), 2.0)
    z = H.sample_latent(mu, 0.1)
    assert abs(z.std().item() - 0.1) < 0.002  # sigma^2 would give 0.01
    assert abs(z.mean().item() - 2.0) < 0.002
    eps = torch.randn(3, 4)
    assert torch.equal(H.sample_latent(mu[:3].expand(3, 4), 0.5, eps), 2.0 + 0.5 * eps)


def test_model_halves_are_plain_sequentials_the_estimators_accept():
    model = H.HarmonicVAE((3, 8, 8), latent=4, sigma_enc=0.5, hidden=16)
    assert [type(m) for m in model.encoder] == [nn.Linear, nn.Sigmoid] * 3 + [nn.Linear]
    assert [type(m) for m in model.decoder] == [nn.Linear, nn.Sigmoid] * 3 + [nn.Linear]
    assert model.encoder[0].in_features == 192 and model.decoder[-1].out_features == 192
    x = torch.rand(5, 3, 8, 8)
    x_hat, mu = model(x)
    assert x_hat.shape == x.shape and mu.shape == (5, 4)
    assert lipschitz.spectral_product_bound(model.decoder) > 0


def _noisy_step(*, target="clean", reduce="mean", kl=True, noise="entry", reseed=False, clear=True):
    """noisy_step written in other styles, right or wrong."""

    def step(model, x, sigma_n, optimizer):
        if reseed:
            torch.manual_seed(0)
        shape = x.shape if noise == "entry" else (1, *x.shape[1:])
        x_in = x + sigma_n * torch.randn(shape, dtype=x.dtype, device=x.device)
        mu = model.encode(x_in)
        x_hat = model.decode(mu + model.sigma_enc * torch.randn_like(mu))
        goal = x if target == "clean" else x_in
        per_example = ((x_hat - goal) ** 2).flatten(1).sum(1)
        if kl:
            per_example = per_example + ((model.sigma_enc**2 + mu**2 - 1) / 2 - math.log(model.sigma_enc)).sum(1)
        loss = per_example.mean() if reduce == "mean" else per_example.sum()
        if clear:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    return step


def _power(*, start="random", square=False, frobenius=False):
    def power_iteration_norm(net, x, iters=100):
        f = lambda p: net(p.unsqueeze(0)).squeeze(0)
        if frobenius:
            return torch.autograd.functional.jacobian(f, x).norm().item()
        v = torch.ones_like(x) if start == "ones" else torch.randn_like(x)
        v = v / v.norm()
        for _ in range(iters):
            u = torch.func.vjp(f, x)[1](torch.func.jvp(f, (x,), (v,))[1])[0]
            if u.norm() == 0:
                return 0.0
            v = u / u.norm()
        value = torch.func.jvp(f, (x,), (v,))[1].norm().item()
        return value**2 if square else value

    return power_iteration_norm


def _product(slope=0.25, squared=False):
    def product_bound(net):
        bound = 1.0
        for m in net:
            if isinstance(m, nn.Linear):
                s = torch.linalg.svdvals(m.weight.detach())[0].item()
                bound *= s**2 if squared else s
            elif isinstance(m, nn.Sigmoid):
                bound *= slope
        return bound

    return product_bound


def _kl_distributions(mu, sigma):
    sigma = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device).expand_as(mu)
    return torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, sigma), torch.distributions.Normal(torch.zeros_like(mu), 1.0)
    ).sum(-1)


def _kl_by_hand(mu, sigma):
    s = torch.as_tensor(sigma, dtype=mu.dtype, device=mu.device)
    return (0.5 * (s**2 + mu**2 - 1) - torch.log(s)).expand_as(mu).sum(dim=-1)


def _project_where(delta, radius):
    norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.dim() - 1))
    return torch.where(norms > radius, delta * radius / norms, delta)


CORRECT_STYLES = {
    "sample-latent-randn-by-shape": (
        "probe_sample_latent",
        lambda mu, sigma, eps=None: (
            mu + sigma * (torch.randn(mu.shape, dtype=mu.dtype, device=mu.device) if eps is None else eps)
        ),
    ),
    "sample-latent-normal-like": (
        "probe_sample_latent",
        lambda mu, sigma, eps=None: mu + sigma * (torch.empty_like(mu).normal_() if eps is None else eps),
    ),
    "kl-torch-distributions": ("probe_fixed_sigma_kl", _kl_distributions),
    "kl-by-hand-expanded": ("probe_fixed_sigma_kl", _kl_by_hand),
    "noisy-step-float-and-set-to-none": ("probe_noisy_step", _noisy_step()),
    "power-iteration-from-ones": ("probe_power_iteration_norm", _power(start="ones")),
    "product-by-svdvals": ("probe_product_bound", _product()),
    "project-by-renorm": ("probe_project_l2", lambda d, r: torch.renorm(d.flatten(1), 2, 0, r).view_as(d)),
    "project-where": ("probe_project_l2", _project_where),
}

MISTAKES = {
    "sample-latent-sigma-squared": (
        "probe_sample_latent",
        lambda mu, sigma, eps=None: mu + sigma**2 * (torch.randn_like(mu) if eps is None else eps),
        "square",
    ),
    "sample-latent-noise-on-the-cpu": (
        "probe_sample_latent",
        lambda mu, sigma, eps=None: mu + sigma * (torch.randn(mu.shape, dtype=mu.dtype) if eps is None else eps),
        "same device",
    ),
    "kl-of-the-2022-report": (
        "probe_fixed_sigma_kl",
        lambda mu, sigma: (torch.as_tensor(sigma) ** 2 + mu**2 - torch.log(torch.as_tensor(sigma)) - 0.5).sum(-1),
        "sigma\\^2 \\+ mu\\^2 - 1",
    ),
    "noisy-target": ("probe_noisy_step", _noisy_step(target="noisy"), "clean x"),
    "loss-summed-over-the-batch": ("probe_noisy_step", _noisy_step(reduce="sum"), "summed over the batch"),
    "kl-missing": ("probe_noisy_step", _noisy_step(kl=False), "KL term is missing"),
    "one-noise-draw-per-batch": ("probe_noisy_step", _noisy_step(noise="batch"), "its own noise"),
    "reseeds-the-global-generator": ("probe_noisy_step", _noisy_step(reseed=True), "fresh noise on every call"),
    "no-zero-grad": ("probe_noisy_step", _noisy_step(clear=False), "zero_grad"),
    "power-iteration-squared": ("probe_power_iteration_norm", _power(square=True), "square"),
    "frobenius-norm": ("probe_power_iteration_norm", _power(frobenius=True), "Frobenius"),
    "product-with-slope-one": ("probe_product_bound", _product(slope=1.0), "at most 1/4"),
    "product-of-squared-norms": ("probe_product_bound", _product(squared=True), "square"),
    "project-rescales-inside-points": (
        "probe_project_l2",
        lambda d, r: d * (r / d.flatten(1).norm(dim=1)).view(-1, *[1] * (d.dim() - 1)),
        "inside the ball",
    ),
    "project-clips-coordinates": ("probe_project_l2", lambda d, r: d.clamp(-r, r), "keeping its direction"),
    "project-in-place": (
        "probe_project_l2",
        lambda d, r: d.mul_((r / d.flatten(1).norm(dim=1).clamp_min(r)).view(-1, *[1] * (d.dim() - 1))),
        "changed what it was given",
    ),
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))
CORRECT = {name: {"reference": getattr(checks, name).reference} for name in CHECKS}
for _style, (_check, _answer) in CORRECT_STYLES.items():
    CORRECT[_check][_style] = _answer
WRONG: dict[str, dict] = {name: {} for name in CHECKS}
for _name, (_check, _answer, _pattern) in MISTAKES.items():
    WRONG[_check][_name] = (_answer, _pattern)


def test_every_check_has_correct_styles_and_wrong_answers():
    assert all(len(CORRECT[name]) > 1 and WRONG[name] for name in CHECKS)
    assert len(CORRECT_STYLES) >= 5


@pytest.mark.parametrize("name", CHECKS)
def test_checks_accept_correct_answers_in_other_styles(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_checks_reject_the_2022_defects_and_typical_mistakes(name):
    check, wrong, hint = MISTAKES[name]
    with pytest.raises(probing.Failed, match=hint):
        getattr(checks, check)(wrong)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert unstable_verdicts(probing.checks_of(checks)[name], CORRECT[name], WRONG[name]) == []


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


NOTEBOOK = Notebook("harmonic")


def test_the_source_solutions_pass_every_test_cell():
    assert NOTEBOOK.failing({}) == set()


@pytest.mark.parametrize("mistake", NOTEBOOK.mistakes, ids=lambda m: m.name)
def test_each_manifest_mistake_fails_exactly_its_test_cells(mistake):
    assert NOTEBOOK.failing({mistake.cell: mistake.code}) == set(mistake.fails)


# ----------------------------------------------------------------------------------------------
# summaries and verdicts


def test_trend_verdict():
    assert R.trend_verdict({1.0: 2.2, 0.5: 5.2, 0.1: 17.9}) == "holds"  # falls as the std grows
    assert R.trend_verdict({1.0: 313191, 0.5: 85023, 0.1: 574363}) == "does not hold"
    assert R.trend_verdict({1.0: 985252, 0.5: 235366, 0.0: 29040}) == "does not hold"  # rises
    assert R.trend_verdict({1.0: 3.0, 0.5: 3.0, 0.0: 4.0}) == "does not hold"  # a tie is no fall
    assert R.trend_verdict({1.0: math.nan, 0.5: 1.0}) == "does not hold"


def test_published_rows_get_the_verdicts_the_tables_imply():
    def verdict(table, dataset, sweep):
        return R.trend_verdict({v: table[(dataset, sweep, v)][0] for v in R.SWEEPS[sweep]})

    for dataset in ("sinc", "cifar10", "celeba"):
        assert verdict(PAPER, dataset, "sigma_enc") == verdict(PAPER, dataset, "sigma_n") == "holds"
        assert verdict(REPRO_2022, dataset, "sigma_n") == "does not hold"
    # the 2022 decoder numbers do fall with sigma_enc on sinc, and only there
    assert [verdict(REPRO_2022, d, "sigma_enc") for d in ("sinc", "cifar10", "celeba")] == [
        "holds",
        "does not hold",
        "does not hold",
    ]


def test_a_spread_stands_under_its_mean_in_the_book_and_beside_it_in_text():
    """Wide tables of "mean ± std" fit the page: in HTML the spread is set on its own line."""
    from genlab.plotting import Table

    table = Table(["variant", "bound"], [["baseline", "2.31 ± 0.057"], ["x", "4.5"]])
    page = table._repr_html_()
    assert '<td class="num">2.31<span class="spread">± 0.057</span></td>' in page
    assert '<td class="num">4.5</td>' in page and "<td>baseline</td>" in page
    assert "2.31 ± 0.057" in str(table)


def test_mean_std_uses_the_sample_std_of_the_2022_tables():
    # the report's seeds for sinc, sigma_enc = 1.0, and its "571.8 +- 432.3"
    mean, std = R.mean_std([1071.063, 323.527, 320.910])
    assert round(mean, 1) == 571.8 and round(std, 1) == 432.3
    assert math.isnan(R.mean_std([1.0])[1])


def test_with_relu_is_the_slope_one_relaxation():
    torch.manual_seed(2)
    net = H.sigmoid_mlp([5, 12, 12, 3])
    right = lipschitz.lipsdp(net)
    wrong = lipschitz.lipsdp(R.with_relu(net))
    assert right < wrong <= lipschitz.spectral_product_bound(R.with_relu(net)) * (1 + 1e-6)
    assert any(isinstance(m, nn.Sigmoid) for m in net)  # the original is left alone


# ----------------------------------------------------------------------------------------------
# the runner


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_grid_writes_tables_and_resumes_from_the_cache(tiny, tmp_path, monkeypatch):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = R.run_grid(tiny, out, cache)
    # sigma_enc = 0.5 without noise belongs to both sweeps: one network, trained once per seed
    assert first.trained == 10 and first.reused == 2
    folder = out / "smoke"
    for name in ("runs.csv", "lipschitz.csv", "trends.csv", "lipschitz.md"):
        assert (folder / name).is_file(), name
    runs = read_csv(folder / "runs.csv")
    assert len(runs) == 12
    for r in runs:
        assert float(r["lower"]) <= float(r["lipsdp"]) * (1 + R.ORDER_TOLERANCE)
        assert float(r["lipsdp"]) <= float(r["product"]) * (1 + R.ORDER_TOLERANCE)
        assert float(r["lower"]) <= float(r["eclipse"]) * (1 + R.ORDER_TOLERANCE) and float(r["eclipse_s"]) >= 0
    rows = read_csv(folder / "lipschitz.csv")
    assert len(rows) == 6 and all(r["n_seeds"] == "2" for r in rows)
    row = next(r for r in rows if r["sweep"] == "sigma_enc" and float(r["value"]) == 0.1)
    assert float(row["paper_mean"]) == 17.9 and float(row["repro2022_mean"]) == 4604.2
    md = (folder / "lipschitz.md").read_text()
    assert "| paper |" in md and "| 2022 reproduction |" in md and "LipSDP" in md
    assert "| this run: ECLipsE-Fast |" in md and "ECLipsE-Fast / LipSDP" in md
    assert {r["lipsdp"] for r in read_csv(folder / "trends.csv")} <= {"holds", "does not hold"}

    def no_training(*args, **kwargs):
        raise AssertionError("a cached network was trained again")

    monkeypatch.setattr(R.training, "train_model", no_training)
    again = R.run_grid(tiny, out, cache)
    assert again.trained == 0 and again.reused == 12
    assert [r["status"] for r in again.runs] == ["cached"] * 12
    monkeypatch.undo()

    # an estimator missing from the cache (added later) is computed alone; LipSDP is not solved again
    for path in (cache / "smoke").rglob("*.estimates.json"):
        known = json.loads(path.read_text())
        path.write_text(
            json.dumps({k: {e: v for e, v in est.items() if not e.startswith("eclipse")} for k, est in known.items()})
        )
    monkeypatch.setattr(lipschitz, "lipsdp", no_training)
    filled = R.run_grid(tiny, out, cache)
    assert [r["eclipse"] for r in filled.runs] == [r["eclipse"] for r in again.runs]
    monkeypatch.undo()

    changed = R.run_grid(replace(tiny, seeds=(0,), epochs={"sinc": 2}), out, cache)
    assert changed.trained == 5 and [r["status"] for r in changed.runs].count("retrained") == 5


def test_attack_and_defects_write_their_tables(tiny, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    rows = R.run_attack(tiny, out, cache)
    assert {(r["radius"], r["method"]) for r in rows} == {(1.0, "pgd"), (1.0, "lbfgs"), (2.0, "pgd"), (2.0, "lbfgs")}
    for r in rows:
        assert r["delta_norm_max"] <= r["radius"] * (1 + 1e-5) and r["damage_mean"] >= 0
    assert (out / "smoke" / "attack.md").read_text().count("|") > 10
    defects = R.run_defects(tiny, out, cache)
    assert {r["defect"] for r in defects} == {"sigma-squared", "wrong-kl", "slope-1", "mixed-pair"}
    for r in defects:
        if r["defect"] == "slope-1":
            assert r["defective"] > r["correct"]  # slopes up to 1 can only loosen the bound
    assert "sigma-squared" in (out / "smoke" / "defects.md").read_text()


def test_cli_writes_tables_and_provenance(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(R.cli, "make_plan", lambda profile, **kw: tiny)
    assert (
        R.main(
            [
                "--profile",
                "smoke",
                "--out",
                str(tmp_path / "o"),
                "--cache",
                str(tmp_path / "c"),
                "--no-attack",
                "--allow-dirty",
            ]
        )
        == 0
    )
    readme = (tmp_path / "o" / "smoke" / "README.md").read_text()
    assert "python -m genlab.experiments.harmonic --profile smoke" in readme and "commit" in readme


def test_log_likelihood_degradation():
    x = torch.zeros(2, 4)
    clean = torch.full((2, 4), 0.5)  # squared error 1 per example
    assert torch.allclose(R.log_likelihood_degradation(x, clean, clean), torch.zeros(2))
    worse = torch.ones(2, 4)  # squared error 4: the log-likelihood falls by 3 units of 1
    assert torch.allclose(R.log_likelihood_degradation(x, clean, worse), torch.full((2,), -3.0))


def test_sinc_encoder_study_writes_one_row_per_variant_sigma_and_seed(tiny, tmp_path):
    known = {v.name: v for v in R.SINC_VARIANTS}
    # the baseline at its three noise levels and the values-only encoder, each for one epoch of small batches
    variants = [replace(known[n], epochs=1, batch_size=64) for n in ("baseline", "values only")]
    plan = replace(tiny, seeds=(0,))
    rows = R.sinc_encoder_study(plan, tmp_path / "out", tmp_path / "cache", variants)
    assert [(r["variant"], r["sigma_n"]) for r in rows] == [
        ("baseline", 0.0),
        ("baseline", 0.5),
        ("baseline", 1.0),
        ("values only", 0.0),
    ]
    assert all(r["status"] == "trained" and r["hidden"] == 8 and r["epochs"] == 1 for r in rows)
    for r in rows:
        assert r["paper"] == PAPER[("sinc", "sigma_n", r["sigma_n"])][0]
        # at the probe points the exact Jacobian norm cannot beat the ascent that starts there
        assert r["at_data"] <= r["lower"] * (1 + 1e-6) and r["lower"] <= r["eclipse"] <= r["product"] * (1 + 1e-6)
        # a 1-d code: the l-inf constant is the gradient's l1 norm, between its l2 norm and sqrt(d) times it
        d = 172 * (2 if r["variant"] == "baseline" else 1)
        assert r["at_data"] <= r["linf_at_data"] * (1 + 1e-9) <= r["at_data"] * math.sqrt(d) * (1 + 1e-9)
        assert r["linf_at_data"] <= r["linf_lower"] <= r["linf_product"] * (1 + 1e-6)
        assert ("dec_lower" in r) == (r["sigma_n"] == 0.0)  # decoders only of the sigma_N = 0 networks
    pairs, values = rows[0], rows[3]
    assert max(pairs["values_part"], pairs["times_part"]) <= pairs["at_data"] * (1 + 1e-9)
    assert math.isnan(values["times_part"]) and values["values_part"] == values["at_data"]

    folder = tmp_path / "out"
    back = R.load_sinc_encoder_rows(folder / "sinc-encoder.csv")
    assert len(back) == 4 and back[3]["times_part"] == "nan" and back[1]["dec_lower"] == ""
    table = R.sinc_encoder_table(back)
    assert [row[:3] for row in table.rows] == [
        ["baseline", known["baseline"].suspect, s] for s in ("0", "0.5", "1")
    ] + [["values only", known["values only"].suspect, "0"]]
    times = table.columns.index("times' columns")
    assert table.rows[3][times] == "—" and table.rows[0][times] != "—"
    assert table.rows[1][table.columns.index("decoder: lower bound")] == "—"
    assert table.rows[0][-1] == "29.8" and "width 8" in table.notes[0]
    md = (folder / "sinc-encoder.md").read_text()
    assert md.startswith("# The sinc(5t) encoder") and md.count("\n| values only |") == 1

    # a second run reuses every network
    again = R.sinc_encoder_study(plan, tmp_path / "out", tmp_path / "cache", variants[:1], sigma_ns=(0.0,))
    assert [r["status"] for r in again] == ["cached"] * 3
