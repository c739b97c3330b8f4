"""Tests of the DCGAN chapter: the networks (genlab.models.dcgan), the GAN pieces (genlab.gan), the
Fréchet distance (genlab.frechet), the hidden-test probes (autograder.checks.dcgan) on the reference,
on correct answers in other styles and on the typical mistakes, and every manifest mistake against
the chapter's test cells."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from autograder import probing
from autograder.checks import dcgan as checks
from genlab import frechet, gan
from genlab.data import TensorData
from genlab.models.dcgan import Discriminator, Generator, transposed_conv_side
from tests.conftest import ROOT
from tests.verdicts import Notebook, assert_stable, coverage_gaps


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- the networks


def test_transposed_conv_side_is_the_repair():
    assert [transposed_conv_side(s) for s in (4, 10, 22)] == [10, 22, 46]  # the original, unpadded
    assert [transposed_conv_side(s, padding=1) for s in (4, 8, 16)] == [8, 16, 32]
    layer = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
    assert layer(torch.zeros(1, 2, 7, 7)).shape[-1] == transposed_conv_side(7, padding=1)


@pytest.mark.parametrize(
    "kw,name", [({"side": 0}, "side"), ({"side": 4, "padding": -1}, "padding"), ({"side": 4, "stride": 1.5}, "stride")]
)
def test_transposed_conv_side_rejects_bad_arguments(kw, name):
    with pytest.raises(ValueError, match=name):
        transposed_conv_side(**kw)


def test_generator_makes_32x32_images_in_the_unit_interval():
    G = Generator()
    x = G(5 * torch.randn(6, 64))
    assert x.shape == (6, 3, 32, 32)
    assert 0 <= x.min() and x.max() <= 1
    assert G.code_size == 64
    assert Generator(16, channels=1)(torch.randn(2, 16)).shape == (2, 1, 32, 32)
    shapes = [tuple(m.weight.shape) for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert shapes == [(128, 64, 4, 4), (64, 32, 4, 4), (32, 3, 4, 4)]
    assert all(m.padding == (1, 1) for m in G.modules() if isinstance(m, nn.ConvTranspose2d))


@pytest.mark.parametrize(
    "kw,name", [({"code_size": 0}, "code_size"), ({"code_size": 2.5}, "code_size"), ({"channels": 0}, "channels")]
)
def test_generator_rejects_bad_sizes(kw, name):
    with pytest.raises(ValueError, match=name):
        Generator(**kw)


def test_generator_and_discriminator_name_a_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        Generator()(torch.randn(3, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
        Discriminator()(torch.rand(2, 3, 46, 46))
    with pytest.raises(ValueError, match="channels"):
        Discriminator(channels=-1)


def test_discriminator_gives_one_logit_per_image():
    D = Discriminator()
    out = D(torch.rand(5, 3, 32, 32))
    assert out.shape == (5, 1)
    kinds = [type(m).__name__ for m in D.downsample]
    assert kinds == ["Conv2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d", "BatchNorm2d", "LeakyReLU"]
    assert not any(isinstance(m, nn.Sigmoid) for m in D.modules())


def test_discriminator_options():
    sn = Discriminator(spectral_norm=True, batch_norm=False)
    weighted = [m for m in sn.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 4 and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sn.modules())
    sn.train()
    for _ in range(30):  # power iteration converges over forward passes
        sn(torch.rand(4, 3, 32, 32))
    with torch.no_grad():
        norms = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in weighted]
    assert max(abs(n - 1) for n in norms) < 0.05
    first = Discriminator(first_batch_norm=True)
    assert isinstance(first.downsample[1], nn.BatchNorm2d) and first.downsample[1].num_features == 32


def test_first_layer_batchnorm_hides_a_global_rescaling():
    """The chapter's experiment: BatchNorm right after the first convolution cancels x -> a x."""
    x = torch.rand(16, 3, 32, 32)
    plain, first = Discriminator().train(), Discriminator(first_batch_norm=True).train()
    with torch.no_grad():
        assert (plain(x) - plain(0.3 * x)).abs().max() > 1e-2
        assert (first(x) - first(0.3 * x)).abs().max() < 0.1 * (plain(x) - plain(0.3 * x)).abs().max()
        first.double()
        assert (first(x.double()) - first(0.3 * x.double())).abs().max() < 1e-2


# ----------------------------------------------------------------------------- the GAN pieces


def test_dcgan_init_distributions():
    net = nn.Sequential(nn.Conv2d(64, 128, 4), nn.ConvTranspose2d(128, 64, 4), nn.BatchNorm2d(4096), nn.Linear(8, 8))
    lin = net[3].weight.detach().clone()
    net.apply(gan.dcgan_init)
    for conv in net[:2]:
        assert abs(conv.weight.mean().item()) < 1e-3 and abs(conv.weight.std().item() - 0.02) < 5e-4
    assert abs(net[2].weight.mean().item() - 1) < 2e-3 and abs(net[2].weight.std().item() - 0.02) < 2e-3
    assert not net[2].bias.any()
    assert torch.equal(net[3].weight, lin)


def test_classification_loss_is_exact_for_large_logits():
    logits = torch.tensor([[-80.0], [0.0], [80.0]])
    labels = torch.tensor([[1.0], [1.0], [0.0]])
    assert gan.classification_loss(logits, labels).item() == pytest.approx((80 + math.log(2) + 80) / 3, rel=1e-6)


def test_discriminator_step_trains_d_only():
    G, D = Generator(8), Discriminator()
    opt = torch.optim.SGD(D.parameters(), lr=0.1)
    before = [p.detach().clone() for p in D.parameters()]
    loss = gan.discriminator_step(D, G, torch.rand(4, 3, 32, 32), torch.randn(4, 8), opt)
    assert loss.dim() == 0 and not loss.requires_grad
    assert all(p.grad is None for p in G.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(D.parameters(), before))


def test_generator_step_trains_g_only():
    G, D = Generator(8), Discriminator()
    opt = torch.optim.SGD(G.parameters(), lr=0.1)
    d_before = [p.detach().clone() for p in D.parameters()]
    g_before = [p.detach().clone() for p in G.parameters()]
    loss = gan.generator_step(D, G, torch.randn(4, 8), opt)
    assert math.isfinite(float(loss))
    assert all(torch.equal(p, b) for p, b in zip(D.parameters(), d_before))
    assert any(not torch.equal(p, b) for p, b in zip(G.parameters(), g_before))


def test_reconstruct_fits_codes_of_generated_images():
    G = Generator(8).eval()
    with torch.no_grad():
        target = G(torch.randn(3, 8) * 0.5)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    G.train()
    start = gan.reconstruction_error(G, torch.zeros(3, 8), target).mean()
    codes = gan.reconstruct(G, target, steps=200, lr=0.05)
    assert codes.shape == (3, 8) and not codes.requires_grad and not G.training
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert gan.reconstruction_error(G, codes, target).mean() < 0.2 * start


def test_activation_maximisation_raises_the_score_and_keeps_the_weights():
    G, D = Generator(8), Discriminator()
    G.apply(gan.dcgan_init)
    D.apply(gan.dcgan_init)
    state = {k: v.clone() for k, v in {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}.items()}
    z = torch.randn(4, 8)
    with torch.no_grad():
        before = D.eval()(gan.sample(G, z)).mean()
    codes, images = gan.activation_maximisation(G, D, z, gan.classification_loss, steps=30, lr=0.05)
    assert codes.shape == z.shape and images.shape == (4, 3, 32, 32)
    with torch.no_grad():
        assert D(images).mean() > before
    after = {**G.state_dict(), **{f"D.{k}": v for k, v in D.state_dict().items()}}
    assert all(torch.equal(after[k], v) for k, v in state.items())
    assert all(p.grad is None for p in list(G.parameters()) + list(D.parameters()))


def test_smooth_removes_the_start_up_bias():
    assert gan.smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert gan.smooth([1.0])[0] == 1.0
    with pytest.raises(ValueError, match="factor"):
        gan.smooth([1.0], factor=1.0)


def test_settings_of_every_profile():
    from genlab.runtime import Profile

    full = gan.settings("full")
    assert (full.epochs, full.batch_size, full.lr, full.betas, full.code_size) == (25, 128, 2e-4, (0.5, 0.999), 64)
    assert (full.vis_steps, full.vis_lr, full.n_recon) == (500, 1e-2, 64)
    assert gan.settings(Profile("smoke", grading=True)) is gan.SETTINGS["grading"]
    assert gan.settings(Profile("smoke")) is gan.SETTINGS["smoke"]
    smoke = gan.settings("smoke")
    assert 200 <= smoke.n_train // smoke.batch_size * smoke.epochs <= 600  # "a few hundred steps"
    with pytest.raises(ValueError, match="profile"):
        gan.settings("medium")


def _toy_data(n: int = 40) -> TensorData:
    x = (torch.rand(n, 3, 32, 32) * 255).to(torch.uint8)
    return TensorData(x=x, y=torch.randint(0, 3, (n,)), name="toy")


def test_train_gan_records_losses_grids_and_snapshots():
    s = gan.GanSettings(n_train=None, n_test=8, epochs=2, batch_size=8, code_size=8, grids=2, snapshots=3)
    G, D = Generator(8), Discriminator()
    hist = gan.train_gan(
        G,
        D,
        _toy_data(),
        d_step=gan.discriminator_step,
        g_step=gan.generator_step,
        settings=s,
        fixed_noise=torch.randn(4, 8),
    )
    assert hist.steps == 10 and hist.steps_per_epoch == 5 and len(hist.g_loss) == 10
    assert [step for step, _ in hist.grids] == [5, 10] and hist.grids[0][1].shape == (4, 3, 32, 32)
    assert [step for step, _ in hist.snapshots] == [3, 7, 10]
    assert set(hist.smoothed()) == {"discriminator", "generator"}
    assert not G.training and not D.training


def test_train_gan_is_reproducible_and_uses_the_given_steps():
    s = gan.GanSettings(n_train=None, n_test=8, epochs=1, batch_size=8, code_size=8, grids=0, snapshots=0)
    calls = []

    def d_step(D, G, real, z, opt):
        calls.append(("d", real.shape[0], z.shape))
        return gan.discriminator_step(D, G, real, z, opt)

    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        G, D = Generator(8), Discriminator()
        runs.append(gan.train_gan(G, D, _toy_data(), d_step=d_step, g_step=gan.generator_step, settings=s, seed=3))
    assert runs[0].d_loss == runs[1].d_loss and runs[0].g_loss == runs[1].g_loss
    assert calls[0] == ("d", 8, torch.Size([8, 8]))
    with pytest.raises(ValueError, match="no batch"):
        gan.train_gan(G, D, _toy_data(4), d_step=d_step, g_step=gan.generator_step, settings=s)


# ----------------------------------------------------------------------------- the Fréchet distance


def test_frechet_distance_of_gaussians():
    d = 5
    mu1, mu2 = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    a, b = torch.rand(d, dtype=torch.float64) + 0.5, torch.rand(d, dtype=torch.float64) + 0.5
    want = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()  # diagonal covariances
    assert frechet.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(float(want), rel=1e-9)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))  # rotate both: the distance stays
    got = frechet.frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(float(want), rel=1e-8)
    c = torch.cov(torch.randn(d, 50, dtype=torch.float64))
    assert frechet.frechet_distance(mu1, c, mu1, c) == pytest.approx(0.0, abs=1e-8)
    c2 = torch.cov(torch.randn(d, 50, dtype=torch.float64))
    assert frechet.frechet_distance(mu1, c, mu2, c2) == pytest.approx(
        frechet.frechet_distance(mu2, c2, mu1, c), rel=1e-8
    )


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="covariances"):
        frechet.frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))


def test_feature_pipeline_on_toy_data():
    data = _toy_data(64)
    net = frechet.train_feature_net(data, epochs=1, batch_size=16)
    assert net.features(torch.rand(2, 3, 32, 32)).shape == (2, frechet.FEATURES)
    assert 0.0 <= frechet.accuracy(net, data) <= 1.0
    mu, cov = frechet.feature_stats(net, data.batches(16, shuffle=False))
    assert mu.shape == (128,) and cov.shape == (128, 128) and mu.dtype == torch.float64
    G = Generator(8)
    curve = frechet.frechet_curve(net, (mu, cov), Generator(8), [(1, G.state_dict()), (2, G.state_dict())], n=20)
    assert [s for s, _ in curve] == [1, 2] and curve[0][1] == pytest.approx(curve[1][1]) and curve[0][1] > 0
    with pytest.raises(ValueError, match="label"):
        frechet.train_feature_net(TensorData(x=data.x, y=None, name="toy"), epochs=1)
    with pytest.raises(ValueError, match="at least 2"):
        frechet.feature_stats(net, [torch.rand(1, 3, 32, 32)])


# ----------------------------------------------------------------------------- the probes: correct answers pass


def init_by_class_name(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


def init_walking_submodules(net):
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.copy_(torch.randn_like(m.weight) * 0.02)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(1 + 0.02 * torch.randn_like(m.weight))
                m.bias.zero_()


def loss_module(logits, labels):
    return nn.BCEWithLogitsLoss()(logits, labels)


def loss_softplus(logits, labels):
    return (labels * F.softplus(-logits) + (1 - labels) * F.softplus(logits)).mean()


def loss_logsigmoid(logits, labels):
    return -(labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)).mean()


def d_step_two_backwards(D, G, real, z, opt):
    D.zero_grad()
    real_loss = F.binary_cross_entropy_with_logits(D(real), torch.ones(real.shape[0], 1, device=real.device))
    real_loss.backward()
    with torch.no_grad():
        fake = G(z)
    fake_loss = loss_softplus(D(fake), torch.zeros(len(z), 1, device=z.device))
    fake_loss.backward()
    opt.step()
    return (real_loss + fake_loss).item()


def d_step_module_loss(D, G, real, z, opt):
    opt.zero_grad(set_to_none=False)
    criterion = nn.BCEWithLogitsLoss()
    out_real, out_fake = D(real), D(G(z).detach())
    loss = criterion(out_real, torch.full_like(out_real, 1.0)) + criterion(out_fake, torch.full_like(out_fake, 0.0))
    loss.backward()
    opt.step()
    return loss


def g_step_module_loss(D, G, z, opt):
    G.zero_grad()
    out = D(G(z))
    loss = nn.BCEWithLogitsLoss()(out, torch.ones_like(out))
    loss.backward()
    opt.step()
    return float(loss)


def g_step_softplus(D, G, z, opt):
    opt.zero_grad()
    loss = F.softplus(-D(G(z))).mean()  # -log sigmoid(l)
    loss.backward()
    opt.step()
    return loss.detach()


def reconstruct_mse_sum(generator, x, steps=500, lr=1e-2):
    generator.eval()
    z = torch.zeros(x.shape[0], generator.code_size, device=x.device).requires_grad_()
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(generator(z), x, reduction="sum").backward()
        opt.step()
    return z.detach()


def reconstruct_mean_over_images(generator, x, steps=500, lr=0.01):
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    code = torch.zeros(len(x), generator.code_size, device=x.device, requires_grad=True)
    opt = torch.optim.Adam([code], lr=lr, betas=(0.9, 0.999))
    for _ in range(steps):
        opt.zero_grad()
        distance = ((generator(code) - x) ** 2).flatten(1).sum(1).mean()
        distance.backward()
        opt.step()
    for p in generator.parameters():
        p.requires_grad_(True)
    return code.detach().clone()


def init_zeroes_conv_biases(m):
    """The text allows setting the convolutions' biases to 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, mean=1.0, std=0.02)
        nn.init.constant_(m.bias, 0.0)


def loss_log1p_exp(logits, labels):
    """Correct for the promised logits up to +-60: exp(60) is still finite in float32."""
    return (labels * torch.log1p(torch.exp(-logits)) + (1 - labels) * torch.log1p(torch.exp(logits))).mean()


def loss_stable_formula(logits, labels):
    return (logits.clamp(min=0) - logits * labels + torch.log1p(torch.exp(-logits.abs()))).mean()


def d_step_item(D, G, real, z, opt):
    opt.zero_grad(set_to_none=True)
    logits_real = D(real)
    logits_fake = D(G(z).detach())
    loss = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    loss = loss + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    loss.backward()
    opt.step()
    return loss.item()


def g_step_labels_made_then_moved(D, G, z, opt):
    opt.zero_grad()
    logits = D(G(z))
    labels = torch.ones(logits.shape, dtype=logits.dtype).to(logits.device)
    loss = gan.classification_loss(logits, labels)
    loss.backward()
    opt.step()
    return loss


def reconstruct_made_then_moved(generator, x, steps=500, lr=1e-2):
    generator.eval()
    z = torch.zeros(len(x), generator.code_size).to(x.device).requires_grad_()
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((generator(z) - x) ** 2).sum()
        loss.backward()
        opt.step()
    return z.detach()


CORRECT = {
    "probe_dcgan_init": {
        "by-class-name": init_by_class_name,
        "walking-submodules": init_walking_submodules,
        "zeroes-conv-biases": init_zeroes_conv_biases,
    },
    "probe_classification_loss": {
        "module": loss_module,
        "softplus": loss_softplus,
        "logsigmoid": loss_logsigmoid,
        "log1p-exp": loss_log1p_exp,
        "stable-formula": loss_stable_formula,
    },
    "probe_discriminator_step": {
        "two-backwards": d_step_two_backwards,
        "module-loss": d_step_module_loss,
        "item": d_step_item,
    },
    "probe_generator_step": {
        "module-loss": g_step_module_loss,
        "softplus": g_step_softplus,
        "labels-made-then-moved": g_step_labels_made_then_moved,
    },
    "probe_reconstruct": {
        "mse-sum": reconstruct_mse_sum,
        "mean-over-images": reconstruct_mean_over_images,
        "made-then-moved": reconstruct_made_then_moved,
    },
}
for _name in CORRECT:
    CORRECT[_name]["reference"] = getattr(checks, _name).reference


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_probe_accepts_correct_answers(name):
    for style in CORRECT[name].values():
        getattr(checks, name)(style)  # raises probing.Failed otherwise


def test_probes_reject_the_student_edition(monkeypatch):
    """The student edition of genlab.gan (reference bodies stripped) fails every probe with its own error
    (tests/test_student_edition.py checks the same on the kernel's real site folder)."""
    import sys
    import types

    from autograder.release import strip_reference

    student = types.ModuleType("student_gan")
    monkeypatch.setitem(sys.modules, "student_gan", student)
    exec(
        compile(strip_reference((ROOT / "src" / "genlab" / "gan.py").read_text()), "student_gan.py", "exec"),
        student.__dict__,
    )
    for check in probing.checks_of(checks).values():
        with pytest.raises(probing.Failed, match="graded exercise"):
            check(getattr(student, check.exercise))


# ----------------------------------------------------------------------------- the probes: typical mistakes fail


def init_resets_linear(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_batchnorm_default(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)


def init_batchnorm_mean_zero(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        nn.init.zeros_(m.bias)


def init_conv2d_only(m):
    if type(m) is nn.Conv2d:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def init_uniform(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        a = 0.02 * math.sqrt(3)
        nn.init.uniform_(m.weight, -a, a)  # the right standard deviation, but not normal
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def loss_bce_on_logits(logits, labels):
    return F.binary_cross_entropy(logits, labels)


def loss_sigmoid_twice(logits, labels):
    return F.binary_cross_entropy_with_logits(torch.sigmoid(logits), labels)


def loss_sigmoid_first(logits, labels):
    return F.binary_cross_entropy(torch.sigmoid(logits), labels)


def loss_sum(logits, labels):
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum")


def loss_as_float(logits, labels):
    return F.binary_cross_entropy_with_logits(logits, labels).item()


def d_step_mixed(D, G, real, z, opt):
    opt.zero_grad()
    logits = D(torch.cat([real, G(z).detach()]))
    labels = torch.cat([torch.ones_like(logits[: len(real)]), torch.zeros_like(logits[len(real) :])])
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    loss.backward()
    opt.step()
    return loss


def d_step_not_detached(D, G, real, z, opt):
    opt.zero_grad()
    r, f = D(real), D(G(z))
    loss = gan.classification_loss(r, torch.ones_like(r)) + gan.classification_loss(f, torch.zeros_like(f))
    loss.backward()
    opt.step()
    return loss


def d_step_no_zero_grad(D, G, real, z, opt):
    r, f = D(real), D(G(z).detach())
    loss = gan.classification_loss(r, torch.ones_like(r)) + gan.classification_loss(f, torch.zeros_like(f))
    loss.backward()
    opt.step()
    return loss


def d_step_labels_on_cpu(D, G, real, z, opt):
    opt.zero_grad()
    r, f = D(real), D(G(z).detach())
    n = real.shape[0]
    loss = gan.classification_loss(r, torch.ones(n, 1)) + gan.classification_loss(f, torch.zeros(n, 1))
    loss.backward()
    opt.step()
    return loss


def g_step_fake_labels(D, G, z, opt):
    opt.zero_grad()
    logits = D(G(z))
    loss = gan.classification_loss(logits, torch.zeros_like(logits))
    loss.backward()
    opt.step()
    return loss


def g_step_minimax(D, G, z, opt):
    opt.zero_grad()
    logits = D(G(z))
    loss = -gan.classification_loss(logits, torch.zeros_like(logits))
    loss.backward()
    opt.step()
    return loss


def g_step_detached(D, G, z, opt):
    opt.zero_grad()
    logits = D(G(z).detach())
    loss = gan.classification_loss(logits, torch.ones_like(logits))
    loss.backward()
    opt.step()
    return loss


def g_step_no_zero_grad(D, G, z, opt):
    logits = D(G(z))
    loss = gan.classification_loss(logits, torch.ones_like(logits))
    loss.backward()
    opt.step()
    return loss


def _reconstruction(
    start: str = "zeros", train: bool = False, params: str = "codes", reduce: str = "sum", restore: bool = False
):
    def reconstruct(generator, x, steps=500, lr=1e-2):
        generator.train(train)
        shape = (x.shape[0], generator.code_size)
        z = torch.zeros(shape, device=x.device) if start == "zeros" else torch.randn(shape, device=x.device)
        z.requires_grad_(params == "codes")
        opt = torch.optim.Adam([z] if params == "codes" else generator.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            sq = (generator(z) - x) ** 2
            (sq.sum() if reduce == "sum" else sq.mean()).backward()
            opt.step()
        if restore:
            generator.train()
        return z.detach()

    return reconstruct


def init_new_parameters(m):
    """Replaces the weights by new Parameters: an optimizer made before holds the old ones."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        m.weight = nn.Parameter(torch.randn_like(m.weight) * 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        m.weight = nn.Parameter(1 + 0.02 * torch.randn_like(m.weight))
        m.bias = nn.Parameter(torch.zeros_like(m.bias))


def d_step_freezes_the_generator(D, G, real, z, opt):
    """No gradient reaches the generator, but its parameters stay frozen for its own step."""
    for p in G.parameters():
        p.requires_grad_(False)
    opt.zero_grad()
    r, f = D(real), D(G(z))
    loss = gan.classification_loss(r, torch.ones_like(r)) + gan.classification_loss(f, torch.zeros_like(f))
    loss.backward()
    opt.step()
    return loss


def d_step_generator_in_eval_mode(D, G, real, z, opt):
    G.eval()
    return gan.discriminator_step(D, G, real, z, opt)


def reconstruct_not_detached(generator, x, steps=500, lr=1e-2):
    generator.eval()
    z = torch.zeros(len(x), generator.code_size, device=x.device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        ((generator(z) - x) ** 2).sum().backward()
        opt.step()
    return z


def reconstruct_unsquared(generator, x, steps=500, lr=1e-2):
    generator.eval()
    z = torch.zeros(len(x), generator.code_size, device=x.device, requires_grad=True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (generator(z) - x).flatten(1).norm(dim=1).sum().backward()  # the L2 distance, not its square
        opt.step()
    return z.detach()


WRONG = {
    "probe_dcgan_init": {
        "resets-linear": (init_resets_linear, r"Linear.*Leave nn.Linear layers as they are"),
        "batchnorm-default": (
            init_batchnorm_default,
            r"BatchNorm2d.*all values are 1: left at a constant.*N\(1, 0.02\^2\)",
        ),
        "batchnorm-mean-zero": (init_batchnorm_mean_zero, r"BatchNorm2d.*N\(1, 0.02\^2\).*mean 1, not 0"),
        "conv2d-only": (init_conv2d_only, r"ConvTranspose2d.*N\(0, 0.02\^2\)"),
        "uniform": (init_uniform, r"kurtosis.*nn.init.normal_"),
        "new-parameters": (init_new_parameters, r"replaced by a new tensor.*optimizer holds the old ones"),
    },
    "probe_classification_loss": {
        "bce-on-logits": (loss_bce_on_logits, r"logits read as probabilities.*binary_cross_entropy_with_logits"),
        "sigmoid-twice": (loss_sigmoid_twice, r"sigmoid applied twice"),
        "sigmoid-first": (loss_sigmoid_first, r"confident discriminator.*rounds to exactly 0 or 1"),
        "sum": (loss_sum, r"sum over the entries; average"),
        "as-float": (loss_as_float, r"gradient.*no \.item\(\)"),
    },
    "probe_discriminator_step": {
        "mixed": (d_step_mixed, r"ONE batch.*Call the discriminator twice"),
        "not-detached": (d_step_not_detached, r"generator received gradients.*detach the fake images"),
        "no-zero-grad": (d_step_no_zero_grad, r"old gradients too.*optimizer.zero_grad\(\)"),
        "labels-on-the-cpu": (d_step_labels_on_cpu, r"logits' device"),
        "freezes-the-generator": (d_step_freezes_the_generator, r"requires_grad switched off"),
        "generator-in-eval-mode": (d_step_generator_in_eval_mode, r"modes after discriminator_step|ONE batch|BCE"),
    },
    "probe_generator_step": {
        "fake-labels": (g_step_fake_labels, r"saturating loss with fake labels.*label 1"),
        "minimax": (g_step_minimax, r"saturating loss with fake labels"),
        "detached": (g_step_detached, r"did not change.*do not detach G\(z\)"),
        "no-zero-grad": (g_step_no_zero_grad, r"old gradients too.*zero_grad"),
    },
    "probe_reconstruct": {
        "optimises-the-weights": (
            _reconstruction(params="weights"),
            r"codes are still zero.*not the generator's weights",
        ),
        "train-mode": (_reconstruction(train=True), r"training mode.*generator.eval\(\)"),
        "random-start": (_reconstruction(start="random"), r"Start from zero codes"),
        "mse-mean": (_reconstruction(reduce="mean"), r"mean over pixels.*eps"),
        "mode-restored": (_reconstruction(restore=True), r"mode after reconstruct.*leave it there"),
        "not-detached": (reconstruct_not_detached, r"graph history.*detach"),
        "unsquared": (reconstruct_unsquared, r"the codes returned by reconstruct.*Start from zero codes"),
    },
}
CHECKS = sorted(n for n in probing.checks_of(checks) if n.startswith("probe_"))


def test_every_check_has_correct_styles_and_wrong_answers():
    assert set(CORRECT) == set(WRONG) == set(CHECKS)
    assert sum(len(styles) - 1 for styles in CORRECT.values()) >= 5


@pytest.mark.parametrize("name,wrong", [(n, w) for n in CHECKS for w in WRONG[n]])
def test_probe_rejects_typical_mistakes(name, wrong):
    answer, pattern = WRONG[name][wrong]
    with pytest.raises(probing.Failed, match=pattern):
        getattr(checks, name)(answer)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHECKS)
def test_verdicts_do_not_depend_on_the_seed(name):
    assert_stable(probing.checks_of(checks)[name], CORRECT[name], WRONG[name])


def test_every_condition_of_the_texts_is_drawn():
    assert coverage_gaps(checks) == {}


def test_probes_verify_outside_the_kernel(tmp_path, monkeypatch):
    """The two halves: a kernel writes records, the grader reads them back and compares."""
    monkeypatch.setenv(probing.PROBE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(probing.PROBE_SEED_ENV, "1234")
    checks.probe_generator_step(g_step_no_zero_grad)
    checks.probe_classification_loss(gan.classification_loss)
    bad = probing.decode((tmp_path / "generator_step.pt").read_bytes())
    good = probing.decode((tmp_path / "classification_loss.pt").read_bytes())
    assert "zero_grad" in checks.probe_generator_step.verify(bad, 1234)
    assert checks.probe_classification_loss.verify(good, 1234) is None


# ----------------------------------------------------------------------------- notebook test cells against mistakes


NOTEBOOK = Notebook("dcgan")


def test_the_manifest_names_every_typical_mistake_of_the_issue():
    assert len(NOTEBOOK.mistakes) >= 14 and len({m.name for m in NOTEBOOK.mistakes}) == len(NOTEBOOK.mistakes)
    assert {m.cell for m in NOTEBOOK.mistakes} == set(NOTEBOOK.solutions)
    assert all(set(m.fails) <= set(NOTEBOOK.tests) for m in NOTEBOOK.mistakes)


def test_source_solutions_pass_every_test_cell():
    assert NOTEBOOK.failing({}) == set()


@pytest.mark.parametrize("mistake", NOTEBOOK.mistakes, ids=[m.name for m in NOTEBOOK.mistakes])
def test_each_mistake_fails_exactly_its_test_cells(mistake):
    assert NOTEBOOK.failing({mistake.cell: mistake.code}) == set(mistake.fails)


def test_the_experiment_runner_writes_its_results(tmp_path, monkeypatch):
    """``python -m genlab.experiments.dcgan`` end to end, with the grading profile's tiny settings."""
    from genlab.data import DataUnavailable
    from genlab.experiments import dcgan as experiment

    monkeypatch.setenv("GENLAB_PROFILE", "smoke")
    try:
        summary = experiment.run_experiment("grading", tmp_path)
    except DataUnavailable as err:
        pytest.skip(f"no CIFAR-10 and no Fashion-MNIST stand-in here: {err}")
    summary["total"] = {"wall_s": 1, "cpu_s": 1}
    experiment.write_readme(
        tmp_path, summary, "python -m genlab.experiments.dcgan --profile grading", torch.device("cpu")
    )
    for name in (
        "losses.csv",
        "frechet.csv",
        "loss_curves.png",
        "samples.png",
        "frechet.png",
        "reconstructions.png",
        "README.md",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert summary["steps"] == {"plain": 4, "spectral norm": 4}
    assert summary["frechet_floor"] >= 0 and summary["reconstruction_mse"] > 0
    readme = (tmp_path / "README.md").read_text()
    assert "not comparable with published FID" in readme and "commit:" in readme
    rows = (tmp_path / "frechet.csv").read_text().splitlines()
    assert rows[0] == "run,step,epoch,frechet_distance" and len(rows) == 1 + 2 * 2
