"""The label bank (algorithms/selftrain.py): the teacher labels every pool image, the whole-pool meta-gradient is
the paper's (head: equal to the batch head meta-gradient; all: to forward-mode autodiff), the weights follow the
sign of <grad CE, g_l>, and a run resumes bit-identically and splits over torchrun processes exactly."""
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metassl.algorithms.meta_gradient import correct_pseudo_labels, head_pseudo_labels, labeled_gradient, \
    meta_gradient_jvp
from metassl.algorithms.selftrain import MetaSelfTrain, SelfTrain, teacher_pass
from metassl.batch import PoolPasses
from metassl.algorithms import build_config
from metassl.errors import UserError
from metassl.train import build_data
from tests.conftest import write_tiny_npz
from tests.test_distributed import ARGS, free_port, run, weights  # noqa: F401 (free_port: run's launcher)


class Net(nn.Module):
    """A body with BN and a linear head, as the registered backbones expose them (features, fc)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.BatchNorm1d(16), nn.Tanh())
        self.fc = nn.Linear(16, 4)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def passes_of(x_pool: torch.Tensor, x_lb: torch.Tensor, y_lb: torch.Tensor, chunk: int = 5) -> PoolPasses:
    """PoolPasses over in-memory tensors, in chunks (so chunking is exercised), on one process."""
    def pool(bs):
        for i in range(0, len(x_pool), bs):
            yield torch.arange(i, min(i + bs, len(x_pool))), x_pool[i:i + bs], torch.full((len(x_pool[i:i + bs]),), -1)

    def labeled(bs, held_out):
        for i in range(0, len(x_lb), bs):
            yield x_lb[i:i + bs], y_lb[i:i + bs]
    return PoolPasses(pool, labeled, len(x_pool), False, lambda t: t)


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(3)
    model = Net()
    model.train()(torch.randn(64, 1, 6, 6, generator=g))        # BN running statistics that are not the defaults
    x_pool, x_lb = torch.randn(23, 1, 6, 6, generator=g), torch.randn(12, 1, 6, 6, generator=g)
    return model, x_pool, x_lb, torch.randint(0, 4, (12,), generator=g)


def test_teacher_pass_gives_every_pool_image_the_eval_mode_probabilities(setup):
    model, x_pool, x_lb, y_lb = setup
    q, y_true, h = teacher_pass(model, passes_of(x_pool, x_lb, y_lb), 5, tta=True, features=True)
    model.eval()
    torch.testing.assert_close(q, F.softmax(model(x_pool), 1))       # tta is skipped where flips are not allowed
    torch.testing.assert_close(h, model.features(x_pool))
    assert (y_true == -1).all() and model.training is False


def test_head_bank_correction_is_the_batch_head_meta_gradient_over_the_whole_pool(setup):
    model, x_pool, x_lb, y_lb = setup
    algo = MetaSelfTrain(bank_meta="labels", bank_params="head", meta_rho=0.3, chunk=5)
    passes = passes_of(x_pool, x_lb, y_lb)
    q, _, h = teacher_pass(model, passes, 5, tta=False, features=True)
    labels, w = algo.correct(model, passes, q, h)
    p, grad_y = head_pseudo_labels(model, x_lb, y_lb, x_pool, phi="mse")      # one batch: every label, the pool
    torch.testing.assert_close(labels, correct_pseudo_labels(p, grad_y, 0.3, "relu", "normalised"))
    assert (labels.argmax(1) != q.argmax(1)).any() and (w == 1).all()          # the step is large enough to act


def test_full_bank_correction_agrees_with_forward_mode_autodiff(setup):
    model, x_pool, x_lb, y_lb = setup
    algo = MetaSelfTrain(bank_meta="labels", bank_params="all", meta_rho=0.3, chunk=5)
    passes = passes_of(x_pool, x_lb, y_lb)
    q, _, _ = teacher_pass(model, passes, 5, tta=False)
    labels, _ = algo.correct(model, passes, q, None)
    model.eval()
    g_l = labeled_gradient(model, x_lb, y_lb)                                   # every label in one batch
    expected = correct_pseudo_labels(q, meta_gradient_jvp(model, x_pool, g_l, "mse"), 0.3, "relu", "normalised")
    torch.testing.assert_close(labels, expected, atol=2e-3, rtol=0)


@pytest.mark.parametrize("params", ["head", "all"])
def test_weights_fall_where_the_labeled_step_raises_the_pseudo_labeled_loss(setup, params):
    """r_u = clamp(1 + d_u / rms(d), 0, 1), d_u = <grad_theta CE(f(u), argmax q_u), g_l> by autograd per image
    (over the head's parameters for params=head)."""
    model, x_pool, x_lb, y_lb = setup
    passes = passes_of(x_pool, x_lb, y_lb)
    q, _, h = teacher_pass(model, passes, 5, tta=False, features=params == "head")
    _, w = MetaSelfTrain(bank_meta="weights", bank_params=params, chunk=5).correct(model, passes, q, h)
    model.eval()
    names = [k for k, _ in model.named_parameters() if params == "all" or k.startswith("fc.")]
    g_l = {k: v for k, v in labeled_gradient(model, x_lb, y_lb).items() if k in names}
    prm = dict(model.named_parameters())
    d = []
    for u in range(len(x_pool)):
        loss = F.cross_entropy(functional_call(model, prm, (x_pool[u:u + 1],)), q[u:u + 1].argmax(1))
        grads = torch.autograd.grad(loss, [prm[k] for k in names])
        d.append(sum((g * g_l[k]).sum() for k, g in zip(names, grads)))
    d = torch.stack(d).detach()
    torch.testing.assert_close(w, (1 + d / d.pow(2).mean().sqrt()).clamp(0, 1), atol=2e-3 if params == "all" else 1e-5,
                               rtol=0)
    assert ((w < 1) == (d < 0)).float().mean() > 0.9 and (w < 1).any() and (w == 1).any()


def test_selftrain_trains_only_on_confident_bank_labels(setup):
    model, x_pool, x_lb, y_lb = setup
    algo = SelfTrain(bank_threshold=0.0, chunk=5)
    algo.relabel(model, passes_of(x_pool, x_lb, y_lb), None)
    from metassl.algorithms import Batch, StepContext
    batch = Batch(x_lb[:4], y_lb[:4], [x_pool[:4]], None, torch.arange(4))
    ctx = StepContext(0, 0.1, 0.0, 1.0, 4)
    assert algo.step(model, batch, ctx).metrics["mask"] == 1
    algo.bank_threshold = 1.01
    out = algo.step(model, batch, ctx)
    assert out.metrics["mask"] == 0 and out.metrics["loss_bank"] == 0


def test_a_streamed_folder_is_refused_in_one_line():
    cfg = build_config(overrides=["algorithm=selftrain", "stream=true"])
    with pytest.raises(UserError, match="labels the whole unlabeled pool"):
        build_data(cfg, SelfTrain(), None, torch.device("cpu"))


BANK = ["iterations=9", "algorithm=metaselftrain", "bank_meta=weights", "bank_params=head", "bank_every=3", "labeled_warmup=2",
        "bank_threshold=0.3", "meta_holdout=0"]


@pytest.fixture(scope="module")
def bank_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bank")
    npz = write_tiny_npz(tmp / "tiny.npz")
    args = [a for a in ARGS if not a.startswith(("algorithm=", "beta"))] + BANK + [f"dataset={npz}", "--quiet"]
    run(args + ["--out", str(tmp / "one")], 1)
    run(args + ["iterations=5", "--out", str(tmp / "one-short")], 1)      # the bank of the first round only:
    run(args + ["iterations=5", "--out", str(tmp / "two-short")], 2)      # strong views differ by process after it
    return tmp


def test_two_processes_build_the_same_bank_as_one_process(bank_runs):
    """Each process labels its shard of the pool and g_l is summed over processes: after the same labeled-only
    warm-up, both hold the bank one process builds (the student steps then draw per-process strong views)."""
    one = torch.load(bank_runs / "one-short" / "last.pt", weights_only=False)["algorithm"]
    two = torch.load(bank_runs / "two-short" / "last.pt", weights_only=False)["algorithm"]
    for k in ("plain", "labels", "weights"):
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    assert one["labels"].shape == (200, 4)


def test_a_bank_run_resumed_at_a_round_boundary_is_bit_identical(bank_runs):
    """The checkpoint of iteration 8 precedes the relabelling before iteration 9 (warm-up 2, rounds of 3): resuming
    repeats it and ends bit-identical, with one `refresh` record per round in metrics.jsonl."""
    cut = bank_runs / "cut"
    shutil.copytree(bank_runs / "one", cut)
    shutil.copy(cut / "prev.pt", cut / "last.pt")
    (cut / "results.json").unlink()
    run(["--resume", str(cut), "--quiet"], 1)
    full, resumed = torch.load(bank_runs / "one" / "last.pt", weights_only=False), torch.load(cut / "last.pt", weights_only=False)
    for k in full["model"]:
        assert torch.equal(resumed["model"][k], full["model"][k]), k
    for k in ("plain", "labels", "weights"):
        assert torch.equal(resumed["algorithm"][k], full["algorithm"][k]), k
    refreshes = [line for line in (cut / "metrics.jsonl").read_text().splitlines() if '"refresh"' in line]
    assert [int(r.split('"iteration": ')[1].split(",")[0]) for r in refreshes] == [3, 6, 9]
