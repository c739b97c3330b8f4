"""Unit tests of the conv_vae chapter's package code (genlab.models.conv, genlab.quantize, the latent-space
tools and losses it adds, genlab.experiments.conv_vae), and of its hidden-test checks run in-process: the
reference passes, correct answers written in other styles pass, each typical mistake fails with a
message that points at the fix, and the student edition's stripped bodies fail as "graded exercise"."""

from __future__ import annotations

import math
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from autograder import probing, release
from autograder.checks import conv_vae as checks
from genlab import latent
from genlab.experiments import conv_vae as runner
from genlab.losses import batch_bpd, categorical_nll, gaussian_kl
from genlab.models.conv import (
    BNConvAE,
    BNConvDecoder,
    BNConvVAE,
    CategoricalConvVAE,
    ConvDecoder,
    ConvEncoder,
    SmallConvVAE,
)
from genlab.models.mlp import reparameterize
from genlab.quantize import dequantize, quantize
from tests.verdicts import Notebook, coverage_gaps, unstable_verdicts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ============================================================================= genlab.quantize


def test_quantize_keeps_the_top_four_bits():
    v = torch.arange(256, dtype=torch.uint8)
    k = quantize(v)
    assert k.dtype == torch.int64 and torch.equal(k, torch.arange(256) // 16)
    assert torch.equal(quantize(v.float() / 255), k), "floats from TensorData.batches give the same levels"
    assert torch.equal(quantize(v, 4), torch.arange(256) // 64)
    assert torch.equal(dequantize(torch.tensor([0, 15])), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("levels", [3, 1, 512, 16.0])
def test_quantize_rejects_bad_levels(levels):
    with pytest.raises(ValueError, match="levels must be"):
        quantize(torch.zeros(3, dtype=torch.uint8), levels)


def test_quantize_rejects_bad_pixels():
    with pytest.raises(ValueError, match=r"x must hold pixel values in \[0, 1\]"):
        quantize(torch.tensor([0.5, 1.5]))
    with pytest.raises(TypeError, match="x must be uint8"):
        quantize(torch.tensor([1, 2]))


# ============================================================================= genlab.models.conv


@pytest.mark.parametrize("n", [1, 3, 16])
def test_conv_encoder_and_decoder_shapes(n):
    enc, dec = ConvEncoder(20), ConvDecoder(20)
    mu, logstd = enc(torch.rand(n, 1, 28, 28))
    assert mu.shape == logstd.shape == (n, 20)
    assert dec(torch.randn(n, 20)).shape == (n, 16, 28, 28)


def test_conv_encoder_and_decoder_parameter_counts():
    # encoder: 5 convolutions and Linear(1024, 40); decoder: Linear(20, 1024) and 5 (transposed) convolutions
    enc = (1 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + 2 * (64 * 64 * 9 + 64) + (1024 * 40 + 40)
    dec = (20 * 1024 + 1024) + 2 * (64 * 64 * 9 + 64) + (64 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 16 * 9 + 16)
    assert sum(p.numel() for p in ConvEncoder(20).parameters()) == enc == 142_920
    assert sum(p.numel() for p in ConvDecoder(20).parameters()) == dec == 127_696


def test_decoder_output_paddings_give_7_14_28():
    dec = ConvDecoder(5, levels=4, hidden=8)
    sides = []
    for m in dec.modules():
        if isinstance(m, nn.ConvTranspose2d):
            m.register_forward_hook(lambda _m, _i, out: sides.append(out.shape[-1]))
    dec(torch.randn(2, 5))
    assert sides == [7, 14, 28]


def test_categorical_vae_mean_image_and_samples():
    torch.manual_seed(1)
    vae = CategoricalConvVAE.build(3, levels=4, hidden=8)
    levels = torch.randint(0, 4, (5, 1, 28, 28))
    mu, logstd = vae.encode(levels)
    assert mu.shape == (5, 3)
    z = torch.randn(6, 3)
    mean = vae.mean_image(z)
    probs = vae.decode(z).softmax(1)
    assert mean.shape == (6, 1, 28, 28)
    assert torch.allclose(mean[:, 0], (probs * torch.tensor([0, 1, 2, 3.0]).view(1, 4, 1, 1) / 3).sum(1), atol=1e-6)
    a = vae.sample(z, generator=torch.Generator().manual_seed(0))
    b = vae.sample(z, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (6, 1, 28, 28)
    assert set((a * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_categorical_vae_samples_follow_the_decoder():
    vae = CategoricalConvVAE.build(2, levels=4, hidden=8)
    z = torch.zeros(4000, 2)
    draws = (vae.sample(z, generator=torch.Generator().manual_seed(3)) * 3).round().long()[:, 0, 5, 9]
    probs = vae.decode(z[:1]).softmax(1)[0, :, 5, 9].detach()
    freq = torch.bincount(draws, minlength=4).double() / 4000
    assert torch.allclose(freq, probs.double(), atol=0.04)


def test_bn_decoder_repairs_the_output_layer():
    dec = BNConvDecoder(2)
    last = list(dec.net)
    assert isinstance(last[-1], nn.Sigmoid) and isinstance(last[-2], nn.ConvTranspose2d)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in last[-2:])
    dec.train()
    out = dec(torch.randn(8, 2) * 3)
    assert out.shape == (8, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    assert (out > 0).all(), "no output pixel is dropped out in training mode"


def test_bn_autoencoder_and_vae_codes():
    x = torch.rand(4, 1, 28, 28)
    ae, vae = BNConvAE().eval(), BNConvVAE().eval()
    assert ae.encode(x).shape == (4, 2) and ae(x).shape == (4, 1, 28, 28)
    mu, logstd = vae.encode(x)
    assert mu.shape == logstd.shape == (4, 2)
    assert vae.decode(mu).shape == (4, 1, 28, 28)
    blocks = [m for m in vae.encoder.modules() if isinstance(m, nn.Sequential) and len(m) == 3]
    assert [type(b).__name__ for b in blocks[0]] == ["BatchNorm2d", "LeakyReLU", "Dropout"]


def test_small_conv_vae_shapes():
    vae = SmallConvVAE(nz=6)
    mu, logstd = vae.encode(torch.rand(3, 1, 28, 28))
    assert mu.shape == logstd.shape == (3, 6)
    assert vae.mean.in_features == 32 * 24 * 24
    out = vae.decode(mu)
    assert out.shape == (3, 1, 28, 28) and out.min() >= 0 and out.max() <= 1


# ============================================================================= losses


def test_categorical_nll_against_a_manual_sum():
    logits = torch.randn(3, 16, 5, 4, dtype=torch.float64)
    target = torch.randint(0, 16, (3, 1, 5, 4))
    manual = -logits.log_softmax(1).gather(1, target).flatten(1).sum(1)
    assert torch.allclose(categorical_nll(logits, target), manual)
    assert torch.allclose(categorical_nll(logits, target[:, 0]), manual), "(N, H, W) targets work too"


def test_categorical_nll_of_uniform_logits_is_four_bits_per_pixel():
    nats = categorical_nll(torch.zeros(2, 16, 28, 28), torch.randint(0, 16, (2, 1, 28, 28)))
    assert torch.allclose(nats, torch.full((2,), 784 * math.log(16)))
    assert torch.allclose(batch_bpd(nats, torch.zeros(2, 1, 28, 28)), torch.tensor(4.0))


def test_categorical_nll_rejects_bad_inputs():
    with pytest.raises(TypeError, match="target must hold integer levels"):
        categorical_nll(torch.zeros(2, 4, 3, 3), torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="target of shape"):
        categorical_nll(torch.zeros(2, 4, 3, 3), torch.zeros(2, 1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must have shape"):
        categorical_nll(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


def test_batch_bpd_is_the_batch_mean_over_one_image():
    nats = torch.tensor([100.0, 300.0])
    assert torch.allclose(batch_bpd(nats, torch.zeros(2, 3, 4, 5)), torch.tensor(200.0 / (60 * math.log(2))))
    with pytest.raises(ValueError, match="nats must have shape"):
        batch_bpd(nats, torch.zeros(3, 1, 2, 2))


# ============================================================================= genlab.latent


def test_manifold_codes_are_normal_quantiles_in_plot_order():
    codes = latent.manifold_codes(4, dtype=torch.float64)
    q = torch.tensor(norm.ppf([0.125, 0.375, 0.625, 0.875]), dtype=torch.float64)
    assert codes.shape == (16, 2) and codes.dtype == torch.float64
    assert torch.allclose(codes[:4, 0], q) and torch.allclose(codes[:4, 1], q[3].expand(4))  # top row: largest z2
    assert torch.allclose(codes[12:, 1], q[0].expand(4))  # bottom row: smallest
    assert torch.allclose(codes[::4, 0], q[0].expand(4))  # left column
    # every code sits in the middle of a cell of equal prior mass
    assert np.allclose(norm.cdf(codes[:4, 0].numpy()), [0.125, 0.375, 0.625, 0.875])


def test_top_variance_dims_ranks_columns():
    codes = torch.randn(1000, 5) * torch.tensor([1.0, 5.0, 0.1, 3.0, 2.0]) + torch.tensor([9.0, 0, 0, 0, 0])
    assert latent.top_variance_dims(codes).tolist() == [1, 3]
    assert latent.top_variance_dims(codes, 3).tolist() == [1, 3, 4]
    with pytest.raises(ValueError, match="k must be"):
        latent.top_variance_dims(codes, 6)
    with pytest.raises(ValueError, match="codes must have shape"):
        latent.top_variance_dims(codes[0])


def test_traversal_codes_middle_row_and_column_vary_one_dimension():
    codes = latent.traversal_codes(6, (4, 1))
    q = torch.tensor(norm.ppf(np.linspace(0.05, 0.95, 7)), dtype=torch.float32)
    assert codes.shape == (49, 6)
    assert (codes[:, [0, 2, 3, 5]] == 0).all()
    middle_row, middle_col = codes[21:28], codes[3::7]
    assert torch.allclose(middle_row[:, 4], q) and (middle_row[:, 1] == 0).all()
    assert torch.allclose(middle_col[:, 1], q.flip(0), atol=1e-6) and (middle_col[:, 4].abs() < 1e-6).all()
    with pytest.raises(ValueError, match="dims must be two different"):
        latent.traversal_codes(6, (2, 2))
    with pytest.raises(ValueError, match="low < high"):
        latent.traversal_codes(6, (1, 2), low=0.9, high=0.1)


def test_toward_class_mean_ends_at_the_class_mean():
    codes = torch.randn(30, 3)
    labels = torch.arange(30) % 3
    z = torch.randn(3)
    path = latent.toward_class_mean(z, codes, labels, 2, torch.tensor([0.0, 0.5, 1.0]))
    mean = codes[labels == 2].mean(0)
    assert torch.allclose(path[0], z) and torch.allclose(path[2], mean) and torch.allclose(path[1], (z + mean) / 2)
    with pytest.raises(ValueError, match="target=7"):
        latent.toward_class_mean(z, codes, labels, 7, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="labels must have shape"):
        latent.toward_class_mean(z, codes, labels[:5], 1, torch.tensor([0.5]))


# ============================================================================= the runner


def _tiny_plan() -> runner.Plan:
    return replace(
        runner.make_plan("smoke"),
        n_train=96,
        n_val=64,
        n_test=64,
        epochs=2,
        snapshots=(0, 2),
        manifold_epochs=1,
        batch=32,
        hidden=4,
        manifold_n=3,
    )


FNS = {"nll": categorical_nll, "bpd": batch_bpd, "kl": gaussian_kl, "sample": reparameterize}


def test_make_plan_profiles():
    assert runner.make_plan("full").epochs == 80 and runner.make_plan("full").snapshots == (0, 10, 80)
    assert runner.make_plan("smoke", grading=True).n_train == 256
    with pytest.raises(ValueError, match="profile must be"):
        runner.make_plan("huge")


def test_training_with_snapshots_writes_checkpoints_and_curves(tmp_path):
    plan = _tiny_plan()
    train, val, _ = runner.load_splits(plan)
    model = CategoricalConvVAE.build(3, hidden=4)
    run = runner.train_with_snapshots(model, train, val, plan, tmp_path, **FNS)
    assert [r["epoch"] for r in run.rows] == [0, 1, 2]
    assert math.isnan(run.rows[0]["train_loss"]) and 3.5 < run.rows[0]["val_loss"] < 4.5
    for r in run.rows[1:]:
        assert math.isclose(r["train_loss"], r["train_rec"] + r["train_kl"], rel_tol=1e-4)
    assert sorted(run.checkpoints) == [0, 2] and all(p.is_file() for p in run.checkpoints.values())
    assert 3.0 < run.first_step_bpd < 5.0
    final = {k: v.clone() for k, v in model.state_dict().items()}
    samples = runner.snapshot_samples(model, run, n=8)
    assert sorted(samples) == [0, 2] and samples[0].shape == (8, 1, 28, 28)
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items()), "left at the last snapshot"
    rows = runner.summary_rows(run, {"loss": 3.0, "rec": 2.9, "kl": 0.1})
    table = runner.text_table(rows)
    assert "about 0.52" in table and "not run (last epoch 2)" in table and "(first step)" in table
    assert runner.markdown_table(rows).count("\n") == len(rows) + 1


def test_command_line_writes_the_results(tmp_path, monkeypatch):
    plan = _tiny_plan()
    monkeypatch.setattr(runner, "make_plan", lambda profile, grading=False: plan)
    argv = ["--profile", "smoke", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "ckpt"), "--allow-dirty"]
    assert runner.main(argv) == 0
    out = tmp_path / "out" / "smoke"
    assert {p.name for p in out.iterdir()} == {
        "README.md",
        "curves.csv",
        "curves.png",
        "manifold.png",
        "samples.png",
        "summary.csv",
        "summary.md",
    }
    readme = (out / "README.md").read_text()
    assert "python -m genlab.experiments.conv_vae --profile smoke" in readme and "commit:" in readme
    assert "machine:" in readme
    assert (out / "curves.csv").read_text().count("\n") == 4  # header and epochs 0, 1, 2


# ============================================================================= the checks: references pass


def test_every_exercise_has_a_check():
    assert set(probing.checks_of(checks)) == {
        "probe_conv_encoder",
        "probe_conv_decoder",
        "probe_categorical_nll",
        "probe_batch_bpd",
        "probe_manifold_codes",
        "probe_top_variance_dims",
        "probe_traversal_codes",
        "probe_toward_class_mean",
    }


@pytest.mark.parametrize("name", sorted(probing.checks_of(checks)))
def test_reference_passes(name):
    check = probing.checks_of(checks)[name]
    check(check.reference)


@pytest.mark.parametrize("name", sorted(probing.checks_of(checks)))
def test_student_edition_fails_as_a_graded_exercise(name):
    """The stripped body (what the student edition ships) must fail, so no check passes on a blank."""
    check = probing.checks_of(checks)[name]
    ref = check.reference
    module = __import__(ref.__module__, fromlist=["_"])
    stripped = types.ModuleType(f"stripped_{ref.__module__}")
    exec(
        compile(release.strip_reference(Path(module.__file__).read_text()), module.__file__, "exec"), stripped.__dict__
    )
    with pytest.raises(probing.Failed, match="graded exercise"):
        check(getattr(stripped, ref.__name__))


# ============================================================================= correct answers in other styles


class EncoderModuleList(nn.Module):
    """Layers in a ModuleList, registered head first, functional GELU."""

    def __init__(self, nz: int, hidden: int = 32):
        super().__init__()
        self.head = nn.Linear(2 * hidden * 16, 2 * nz)
        chans = [1, hidden, hidden, 2 * hidden, 2 * hidden, 2 * hidden]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=s, padding=1) for a, b, s in zip(chans[:-1], chans[1:], [2, 1, 2, 1, 2])
        )
        self.nz = nz

    def forward(self, x):
        for c in self.convs:
            x = F.gelu(c(x))
        out = self.head(x.view(x.shape[0], -1))
        return out[:, : self.nz], out[:, self.nz :]


class EncoderAttributes(nn.Module):
    """One attribute per layer, listed out of order; a list of two tensors returned."""

    def __init__(self, nz: int, hidden: int = 32):
        super().__init__()
        h = hidden
        self.c5 = nn.Conv2d(2 * h, 2 * h, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))
        self.c1 = nn.Conv2d(1, h, 3, 2, 1)
        self.c3 = nn.Conv2d(h, 2 * h, 3, 2, 1)
        self.c2 = nn.Conv2d(h, h, 3, 1, 1)
        self.c4 = nn.Conv2d(2 * h, 2 * h, 3, 1, 1)
        self.act = nn.GELU()
        self.out = nn.Linear(32 * h, 2 * nz)

    def forward(self, x):
        for c in (self.c1, self.c2, self.c3, self.c4, self.c5):
            x = self.act(c(x))
        mu, logstd = torch.chunk(self.out(torch.flatten(x, 1)), 2, dim=-1)
        return [mu, logstd]


class DecoderUnflatten(nn.Module):
    """One Sequential with nn.Unflatten."""

    def __init__(self, nz: int, levels: int = 16, hidden: int = 32):
        super().__init__()
        h = hidden
        self.net = nn.Sequential(
            nn.Linear(nz, 32 * h),
            nn.GELU(),
            nn.Unflatten(1, (2 * h, 4, 4)),
            nn.ConvTranspose2d(2 * h, 2 * h, 3, 2, 1, 0),
            nn.GELU(),
            nn.Conv2d(2 * h, 2 * h, 3, padding=1),
            nn.GELU(),
            nn.ConvTranspose2d(2 * h, h, 3, 2, 1, 1),
            nn.GELU(),
            nn.Conv2d(h, h, 3, padding="same"),
            nn.GELU(),
            nn.ConvTranspose2d(h, levels, 3, 2, 1, 1),
        )

    def forward(self, z):
        return self.net(z)


class DecoderFunctional(nn.Module):
    """Attributes registered convolutions first, F.gelu, view."""

    def __init__(self, nz: int, levels: int = 16, hidden: int = 32):
        super().__init__()
        h = self.h = hidden
        self.up3 = nn.ConvTranspose2d(h, levels, 3, stride=2, padding=1, output_padding=1)
        self.up2 = nn.ConvTranspose2d(2 * h, h, 3, stride=2, padding=1, output_padding=1)
        self.up1 = nn.ConvTranspose2d(2 * h, 2 * h, 3, stride=2, padding=1)
        self.mid2 = nn.Conv2d(h, h, 3, padding=1)
        self.mid1 = nn.Conv2d(2 * h, 2 * h, 3, padding=1)
        self.fc = nn.Linear(nz, 2 * h * 4 * 4)

    def forward(self, z):
        x = F.gelu(self.fc(z)).view(-1, 2 * self.h, 4, 4)
        x = F.gelu(self.mid1(F.gelu(self.up1(x))))
        x = F.gelu(self.mid2(F.gelu(self.up2(x))))
        return self.up3(x)


def nll_gather(logits, target):
    return -torch.log_softmax(logits, dim=1).gather(1, target.long()).sum(dim=(1, 2, 3))


def nll_loss_style(logits, target):
    per_pixel = F.nll_loss(F.log_softmax(logits, 1), target[:, 0], reduction="none")
    return per_pixel.reshape(len(per_pixel), -1).sum(-1)


def nll_one_hot(logits, target):
    one_hot = F.one_hot(target[:, 0].long(), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return -(one_hot * logits.log_softmax(1)).sum(dim=(1, 2, 3))


def bpd_tensor(nats, images):
    return (nats / math.log(2)).mean() / math.prod(images.shape[1:])


def manifold_ndtri(n, dtype=torch.float32, device=None):
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).to(device=device, dtype=dtype)
    rows, cols = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1)


def manifold_loops(n, dtype=torch.float32, device=None):
    q = norm.ppf((np.arange(n) + 0.5) / n)
    codes = [[q[c], q[n - 1 - r]] for r in range(n) for c in range(n)]
    return torch.tensor(codes, dtype=dtype, device=device)


def top_var_argsort(codes, k=2):
    return torch.argsort(codes.std(dim=0), descending=True)[:k]


def top_var_numpy(codes, k=2):
    v = np.var(codes.detach().cpu().numpy(), axis=0)
    return torch.as_tensor(np.argsort(-v)[:k].copy(), device=codes.device)


def top_var_population(codes, k=2):
    return codes.var(0, unbiased=False).argsort(descending=True)[:k]


def traversal_loops(nz, dims, steps=7, low=0.05, high=0.95, *, dtype=torch.float32, device=None):
    q = norm.ppf(np.linspace(low, high, steps))
    out = torch.zeros(steps * steps, nz, dtype=dtype, device=device)
    for r in range(steps):
        for c in range(steps):
            out[r * steps + c, dims[0]] = float(q[c])
            out[r * steps + c, dims[1]] = float(q[steps - 1 - r])
    return out


def traversal_meshgrid(nz, dims, steps=7, low=0.05, high=0.95, *, dtype=torch.float32, device=None):
    q = torch.special.ndtri(torch.linspace(low, high, steps, dtype=torch.float64)).to(device=device, dtype=dtype)
    ys, xs = torch.meshgrid(q.flip(0), q, indexing="ij")
    codes = torch.zeros(steps, steps, nz, dtype=dtype, device=device)
    codes[..., dims[0]], codes[..., dims[1]] = xs, ys
    return codes.reshape(-1, nz)


def toward_loop(z, codes, labels, target, alphas):
    mask = (labels == target).to(codes.dtype).unsqueeze(1)
    mean = (codes * mask).sum(0) / mask.sum()
    return torch.stack([(1 - a) * z + a * mean for a in alphas])


def toward_broadcast(z, codes, labels, target, alphas):
    mean = codes[labels.eq(target)].mean(axis=0, keepdim=True)
    return torch.lerp(z.expand(len(alphas), -1), mean.expand(len(alphas), -1), alphas.unsqueeze(-1))


class EncoderTanhGelu(EncoderModuleList):
    """nn.GELU(approximate="tanh") is a GELU too: within NETWORK_TOL of the exact one."""

    def __init__(self, nz: int, hidden: int = 32):
        super().__init__(nz, hidden)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):
        for c in self.convs:
            x = self.act(c(x))
        out = self.head(x.flatten(1))
        return out[:, : self.nz], out[:, self.nz :]


class DecoderTanhGelu(DecoderUnflatten):
    def __init__(self, nz: int, levels: int = 16, hidden: int = 32):
        super().__init__(nz, levels, hidden)
        for i, m in enumerate(self.net):
            if isinstance(m, nn.GELU):
                self.net[i] = nn.GELU(approximate="tanh")


def nll_flat_cross_entropy(logits, target):
    n, k = logits.shape[:2]
    flat = logits.permute(0, 2, 3, 1).reshape(-1, k)
    return F.cross_entropy(flat, target.reshape(-1).long(), reduction="none").view(n, -1).sum(1)


def bpd_log2e(nats, images):
    return nats.mean() * math.log2(math.e) / images[0].numel()


def manifold_made_then_moved(n, dtype=torch.float32, device=None):
    """Built on the default device, then moved: a correct answer."""
    q = torch.tensor(norm.ppf((np.arange(n) + 0.5) / n), dtype=dtype)
    codes = torch.stack([q.repeat(n), q.flip(0).repeat_interleave(n)], dim=1)
    return codes.to(device) if device is not None else codes


def manifold_numpy_meshgrid(n, dtype=torch.float32, device=None):
    q = norm.ppf((np.arange(n) + 0.5) / n)
    xs, ys = np.meshgrid(q, q[::-1])
    return torch.as_tensor(np.stack([xs.ravel(), ys.ravel()], axis=1), dtype=dtype, device=device)


def traversal_made_then_moved(nz, dims, steps=7, low=0.05, high=0.95, *, dtype=torch.float32, device=None):
    codes = traversal_loops(nz, dims, steps, low, high, dtype=dtype)
    return codes.to(device=device) if device is not None else codes


def toward_einsum(z, codes, labels, target, alphas):
    m = codes[labels == target].mean(0)
    return z.unsqueeze(0) + torch.einsum("a,d->ad", alphas, m - z)


# ============================================================================= typical mistakes


def _decoder_with(paddings, fix):
    class Wrong(ConvDecoder):
        def __init__(self, nz, levels=16, hidden=32):
            super().__init__(nz, levels, hidden)
            for layer, pad in zip([m for m in self.modules() if isinstance(m, nn.ConvTranspose2d)], paddings):
                layer.output_padding = (pad, pad)

        def forward(self, z):
            return fix(super().forward(z))

    return Wrong


DECODER_27_PADDED = _decoder_with((0, 1, 0), lambda out: F.pad(out, (0, 1, 0, 1)))
DECODER_29_CROPPED = _decoder_with((1, 0, 0), lambda out: out[..., :28, :28])
DECODER_27_RESIZED = _decoder_with((0, 1, 0), lambda out: F.interpolate(out, size=(28, 28), mode="bilinear"))


class EncoderReLU(EncoderModuleList):
    def forward(self, x):
        for c in self.convs:
            x = F.relu(c(x))
        out = self.head(x.flatten(1))
        return out[:, : self.nz], out[:, self.nz :]


class EncoderTwoHeads(nn.Module):
    def __init__(self, nz, hidden=32):
        super().__init__()
        self.body = EncoderModuleList(nz, hidden).convs
        self.mu, self.logstd = nn.Linear(32 * hidden, nz), nn.Linear(32 * hidden, nz)

    def forward(self, x):
        for c in self.body:
            x = F.gelu(c(x))
        return self.mu(x.flatten(1)), self.logstd(x.flatten(1))


class DecoderSoftmax(DecoderUnflatten):
    def forward(self, z):
        return self.net(z).softmax(dim=1)


def nll_mean_over_pixels(logits, target):
    return F.cross_entropy(logits, target[:, 0], reduction="none").mean(dim=(1, 2))


def nll_default_reduction(logits, target):
    return F.cross_entropy(logits, target[:, 0])


def bpd_with_batch(nats, images):
    return nats.mean() / (images.numel() * math.log(2))


def bpd_natural_log(nats, images):
    return nats.mean() / images[0].numel()


def manifold_linspace(n, dtype=torch.float32, device=None):
    q = torch.linspace(-3, 3, n, dtype=dtype, device=device)
    return torch.stack([q.repeat(n), q.flip(0).repeat_interleave(n)], dim=1)


def manifold_swapped(n, dtype=torch.float32, device=None):
    return manifold_ndtri(n, dtype, device)[:, [1, 0]]


def manifold_upside_down(n, dtype=torch.float32, device=None):
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n).to(device=device, dtype=dtype)
    return torch.stack([q.repeat(n), q.repeat_interleave(n)], dim=1)


def top_var_wrong_axis(codes, k=2):
    return torch.topk(codes.var(dim=1), k).indices


def traversal_random_rest(nz, dims, steps=7, low=0.05, high=0.95, *, dtype=torch.float32, device=None):
    codes = torch.randn(steps * steps, nz, dtype=dtype, device=device)
    right = latent.traversal_codes(nz, dims, steps, low, high, dtype=dtype, device=device)
    codes[:, list(dims)] = right[:, list(dims)]
    return codes


def traversal_on_default_device(nz, dims, steps=7, low=0.05, high=0.95, *, dtype=torch.float32, device=None):
    return latent.traversal_codes(nz, dims, steps, low, high, dtype=dtype)


def toward_all_codes(z, codes, labels, target, alphas):
    return z + alphas[:, None] * (codes.mean(0) - z)


def bpd_float(nats, images):
    """A Python float: the training loop's .backward() cannot use it."""
    return float(nats.mean()) * math.log2(math.e) / images[0].numel()


def manifold_without_device(n, dtype=torch.float32, device=None):
    q = torch.tensor(norm.ppf((np.arange(n) + 0.5) / n), dtype=dtype)
    return torch.stack([q.repeat(n), q.flip(0).repeat_interleave(n)], dim=1)


def manifold_default_dtype(n, dtype=torch.float32, device=None):
    return manifold_ndtri(n, torch.float32, device)


def top_var_int32(codes, k=2):
    return torch.topk(codes.var(dim=0), k).indices.to(torch.int32)


def top_var_list(codes, k=2):
    return torch.topk(codes.var(dim=0), k).indices.tolist()


def top_var_centres_in_place(codes, k=2):
    codes -= codes.mean(0)
    return torch.topk((codes**2).mean(0), k).indices


# ============================================================================= the tables

CORRECT = {
    "probe_conv_encoder": {
        "module-list": EncoderModuleList,
        "attributes": EncoderAttributes,
        "tanh-gelu": EncoderTanhGelu,
    },
    "probe_conv_decoder": {
        "unflatten": DecoderUnflatten,
        "functional": DecoderFunctional,
        "tanh-gelu": DecoderTanhGelu,
    },
    "probe_categorical_nll": {
        "gather": nll_gather,
        "nll-loss": nll_loss_style,
        "one-hot": nll_one_hot,
        "flat-cross-entropy": nll_flat_cross_entropy,
    },
    "probe_batch_bpd": {"tensor": bpd_tensor, "log2e": bpd_log2e},
    "probe_manifold_codes": {
        "ndtri": manifold_ndtri,
        "loops": manifold_loops,
        "made-then-moved": manifold_made_then_moved,
        "numpy-meshgrid": manifold_numpy_meshgrid,
    },
    "probe_top_variance_dims": {
        "argsort": top_var_argsort,
        "numpy-back-to-torch": top_var_numpy,
        "population-variance": top_var_population,
    },
    "probe_traversal_codes": {
        "loops": traversal_loops,
        "meshgrid": traversal_meshgrid,
        "made-then-moved": traversal_made_then_moved,
    },
    "probe_toward_class_mean": {"loop": toward_loop, "broadcast": toward_broadcast, "einsum": toward_einsum},
}
for _name in CORRECT:
    CORRECT[_name]["reference"] = getattr(checks, _name).reference

WRONG = {
    "probe_conv_encoder": {
        "relu": (EncoderReLU, "GELU after every convolution"),
        "two-heads": (EncoderTwoHeads, "one nn.Linear"),
    },
    "probe_conv_decoder": {
        "27-padded": (DECODER_27_PADDED, r"sides of the transposed.*got \[7, 14, 27\].*output_padding"),
        "29-cropped": (DECODER_29_CROPPED, r"got \[8, 15, 29\].*4 -> 7 needs output_padding=0"),
        "27-resized": (DECODER_27_RESIZED, "Do not crop or pad"),
        "softmax": (DecoderSoftmax, "logits: no softmax"),
    },
    "probe_categorical_nll": {
        "mean-over-pixels": (nll_mean_over_pixels, "mean over the pixels.*SUM"),
        "default-reduction": (nll_default_reduction, "expected a torch.Tensor of shape|mean over everything"),
    },
    "probe_batch_bpd": {
        "with-batch": (bpd_with_batch, "whole batch"),
        "natural-log": (bpd_natural_log, "nats per dimension: divide by ln 2"),
        "a-float": (bpd_float, r"gradient of batch_bpd.*no float\(\)"),
    },
    "probe_manifold_codes": {
        "linspace": (manifold_linspace, "evenly spaced; use normal quantiles"),
        "swapped": (manifold_swapped, "coordinates are swapped"),
        "upside-down": (manifold_upside_down, "second coordinate runs the wrong way"),
        "without-device": (manifold_without_device, "not on the device"),
        "ignores-dtype": (manifold_default_dtype, "dtype torch.float32; expected torch.float64"),
    },
    "probe_top_variance_dims": {
        "wrong-axis": (top_var_wrong_axis, "over the examples, dim=0"),
        "int32": (top_var_int32, "dtype torch.int32; expected torch.int64"),
        "a-list": (top_var_list, "expected a torch.Tensor"),
        "centres-in-place": (top_var_centres_in_place, "changed what it was given"),
    },
    "probe_traversal_codes": {
        "random-rest": (traversal_random_rest, "must be exactly 0"),
        "default-device": (traversal_on_default_device, "not on the device"),
    },
    "probe_toward_class_mean": {"all-codes": (toward_all_codes, "mean of ALL codes")},
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))


def test_every_check_has_correct_styles_and_wrong_answers():
    assert set(CORRECT) == set(WRONG) == set(CHECKS)
    assert sum(len(styles) - 1 for styles in CORRECT.values()) >= 5


@pytest.mark.parametrize("name", CHECKS)
def test_correct_answers_in_other_styles_pass(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)


@pytest.mark.parametrize("name,wrong", [(n, w) for n in CHECKS for w in WRONG[n]])
def test_typical_mistakes_fail_with_a_pointer_to_the_fix(name, wrong):
    answer, pattern = WRONG[name][wrong]
    with pytest.raises(probing.Failed, match=pattern):
        getattr(checks, name)(answer)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert unstable_verdicts(probing.checks_of(checks)[name], CORRECT[name], WRONG[name]) == []


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


# ============================================================================= the notebook's test cells

NOTEBOOK = Notebook("conv_vae")


def test_the_source_solutions_pass_every_test_cell():
    assert NOTEBOOK.failing({}) == set()


@pytest.mark.parametrize("mistake", NOTEBOOK.mistakes, ids=lambda m: m.name)
def test_each_manifest_mistake_fails_exactly_its_test_cells(mistake):
    assert NOTEBOOK.failing({mistake.cell: mistake.code}) == set(mistake.fails)
