"""The meta-gradient (Eq. 13-16): fd and jvp agree with exact; the meta pass has no side effects."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metassl.algorithms.meta_gradient import correct_pseudo_labels, meta_gradient, project_to_simplex
from metassl.diagnostics.check import agreement
from metassl.config import Config
from metassl.torch_utils import eval_mode

EPS = Config.eps_scale   # the fd step every run uses


def small_net() -> nn.Module:
    """A small conv net with BN and dropout, so eval-mode handling matters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Dropout(0.3),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double()


def batches(model: nn.Module, n: int = 6):
    g = torch.Generator().manual_seed(1)
    x_lb = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64)
    y_lb = torch.randint(0, 5, (n,), generator=g)
    x_ulb = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64)
    with eval_mode(model), torch.no_grad():
        y_tilde = F.softmax(model(x_ulb), 1)
    return x_lb, y_lb, x_ulb, y_tilde


@pytest.mark.parametrize("phi", ["mse", "kl"])
def test_fd_and_jvp_agree_with_exact_in_float64(phi):
    model = small_net()
    model.train()
    x_lb, y_lb, x_ulb, y_tilde = batches(model)
    exact = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="exact", phi=phi)
    fd = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="fd", phi=phi, eps_scale=EPS)
    jvp = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="jvp", phi=phi)
    assert exact.abs().max() > 1e-6  # not vacuous
    a_fd, a_jvp = agreement(fd, exact), agreement(jvp, exact)
    assert a_fd["cosine"] > 0.99 and a_fd["rel_error"] < 1e-3      # fd: O(eps^2) truncation error
    assert a_jvp["cosine"] > 0.999999 and a_jvp["rel_error"] < 1e-9  # jvp is exact at y~ = f(x_u)


def test_fd_matches_the_authors_formula():
    """MSE: grad = (softmax(f(theta+eps g)) - softmax(f(theta-eps g))) / eps with eps = 0.01/||g||."""
    model = small_net().eval()
    x_lb, y_lb, x_ulb, y_tilde = batches(model)
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(model(x_lb), y_lb), params)
    eps = 0.01 / torch.sqrt(sum((gi ** 2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p.add_(eps * gi)
        plus = F.softmax(model(x_ulb), 1)
        for p, gi in zip(params, g):
            p.sub_(2 * eps * gi)
        minus = F.softmax(model(x_ulb), 1)
        for p, gi in zip(params, g):
            p.add_(eps * gi)
    expected = (plus - minus) / eps
    got = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="fd", phi="mse", eps_scale=EPS)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("method", ["fd", "jvp", "exact"])
def test_meta_pass_leaves_parameters_buffers_grads_and_mode_bit_identical(method):
    model = small_net()
    model.train()
    x_lb, y_lb, x_ulb, y_tilde = batches(model)
    model(x_lb).sum().backward()  # populate .grad, and BN running stats
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method=method, eps_scale=EPS)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("projection", ["relu", "simplex"])
def test_corrected_pseudo_labels_are_distributions(projection):
    torch.manual_seed(0)
    y_tilde = F.softmax(torch.randn(64, 10), 1)
    grad = torch.randn(64, 10) * 5
    y_hat = correct_pseudo_labels(y_tilde, grad, 0.1, projection)
    assert (y_hat >= 0).all()
    torch.testing.assert_close(y_hat.sum(1), torch.ones(64))


def test_simplex_projection_is_the_nearest_distribution():
    y = torch.tensor([[0.5, 0.8, -0.1], [0.2, 0.2, 0.2], [2.0, 0.0, 0.0]])
    p = project_to_simplex(y, "simplex")
    torch.testing.assert_close(p, torch.tensor([[0.35, 0.65, 0.0], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]]))


def test_relu_projection_leaves_an_all_zero_row_as_is():
    y = torch.tensor([[-1.0, -2.0], [0.2, 0.6]])
    p = project_to_simplex(y, "relu")
    torch.testing.assert_close(p, torch.tensor([[0.0, 0.0], [0.25, 0.75]]))


@pytest.mark.parametrize("phi", ["mse", "kl"])
def test_fused_and_batched_fd_give_the_same_pseudo_labels_and_gradient(phi):
    """The fast path (two vmapped forwards, y~ from their mean) computes what the plain path computes:
    y~ within O(eps^2) (< 1e-5 in probability here), the gradient to float32 round-off."""
    from metassl.algorithms.meta_gradient import fd_pseudo_labels
    model = small_net()
    x_lb, y_lb, x_ulb, _ = batches(model)
    model, x_lb, x_ulb = model.float().train(), x_lb.float(), x_ulb.float()
    with eval_mode(model), torch.no_grad():
        y_plain = F.softmax(model(x_ulb), 1)
    g_plain = meta_gradient(model, x_lb, y_lb, x_ulb, y_plain, method="fd", phi=phi, eps_scale=EPS)
    for batched in (False, True):
        y_fast, g_fast = fd_pseudo_labels(model, x_lb, y_lb, x_ulb, phi=phi, eps_scale=EPS, batched=batched)
        torch.testing.assert_close(y_fast, y_plain, rtol=0, atol=1e-5)
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-3, atol=1e-4)
    assert all(m.training for m in model.modules())


class HeadNet(nn.Module):
    """features() + fc, the contract every registered backbone keeps (models/registry.py)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten())
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.fc(self.features(x))


@pytest.mark.parametrize("phi", ["mse", "kl"])
def test_head_meta_gradient_is_the_exact_meta_gradient_with_g_l_restricted_to_the_head(phi):
    from metassl.algorithms.meta_gradient import head_pseudo_labels, labeled_gradient
    model = HeadNet().double()
    x_lb, y_lb, x_ulb, y_tilde = batches(model)
    p, head = head_pseudo_labels(model, x_lb, y_lb, x_ulb, phi=phi)
    with eval_mode(model):
        g_l = labeled_gradient(model, x_lb, y_lb)
    g_head = {k: (g if k.startswith("fc.") else torch.zeros_like(g)) for k, g in g_l.items()}
    jvp_head = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="jvp", phi=phi, g_l=g_head)
    torch.testing.assert_close(p, y_tilde)                        # y~ is the plain eval-mode prediction (Eq. 2)
    assert head.abs().max() > 1e-4
    torch.testing.assert_close(head, jvp_head, rtol=1e-9, atol=1e-12)
    # and it is not the full meta-gradient: the body's share is left out
    full = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="jvp", phi=phi)
    assert (head - full).abs().max() > 1e-4



def test_head_g_l_is_autograds_head_gradient_and_chunk_sums_add_up_to_the_mean():
    """Eq. 14 closed form on the head (what head_pseudo_labels and the label bank use) is the labeled CE's
    gradient w.r.t. fc; reduction="sum" over chunks divided by the count is the whole batch's mean, for both."""
    from metassl.algorithms.meta_gradient import head_gradient, labeled_gradient
    model = HeadNet().double()
    x_lb, y_lb, _, _ = batches(model)
    with eval_mode(model):
        g_all = labeled_gradient(model, x_lb, y_lb)
        chunks = [labeled_gradient(model, x_lb[i:i + 4], y_lb[i:i + 4], "sum") for i in (0, 4)]
        h = model.features(x_lb).detach()
    g_head = head_gradient(h, y_lb, model.fc)
    for k in ("weight", "bias"):
        torch.testing.assert_close(g_head[k], g_all[f"fc.{k}"], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(sum(head_gradient(h[i:i + 4], y_lb[i:i + 4], model.fc, "sum")[k] for i in (0, 4))
                                   / len(y_lb), g_head[k], rtol=1e-10, atol=1e-12)
    for k, g in g_all.items():
        torch.testing.assert_close((chunks[0][k] + chunks[1][k]) / len(y_lb), g, rtol=1e-10, atol=1e-12)

def test_head_meta_gradient_uses_the_reduced_g_l():
    from metassl.algorithms.meta_gradient import head_pseudo_labels
    model = HeadNet().double()
    x_lb, y_lb, x_ulb, _ = batches(model)
    seen = {}

    def double_it(g):
        seen.update(g)
        return {k: 2 * v for k, v in g.items()}

    _, once = head_pseudo_labels(model, x_lb, y_lb, x_ulb, phi="mse")
    _, twice = head_pseudo_labels(model, x_lb, y_lb, x_ulb, phi="mse", reduce=double_it)
    assert set(seen) == {"weight", "bias"}
    torch.testing.assert_close(twice, 2 * once)               # grad_y is linear in g_l (Eq. 13)


def test_head_only_metamixup_step_costs_a_quarter_fewer_flops_than_the_full_meta_pass():
    from torch.utils.flop_counter import FlopCounterMode

    from metassl.algorithms.base import StepContext
    from metassl.batch import Batch
    from metassl.algorithms import build_algorithm, build_config
    from metassl.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, 28)
    batch = Batch(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,)), [torch.randn(16, 1, 28, 28)])
    flops = {}
    for params in ("all", "head"):
        algo = build_algorithm(build_config("fmnist-1000", overrides=["algorithm=metamixup", f"meta_params={params}"]))
        with FlopCounterMode(display=False) as counter:
            out = algo.step(model, batch, StepContext(10, 0.05, 0.05, 1.0, 10))
            out.loss.backward()
        flops[params] = counter.get_total_flops()
        assert out.metrics["correction_l1"] > 0
    assert flops["head"] < 0.78 * flops["all"]
