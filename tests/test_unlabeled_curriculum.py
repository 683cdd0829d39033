"""The growing unlabeled batch (Fast FixMatch's curriculum batch size): its sizes, that it walks the shuffled
passes without skipping or repeating an image, that a run counts the images it drew, resumes exactly, and that
algorithms which cannot take it refuse it in one line."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from metassl.algorithms import build_algorithm
from metassl.config import Config
from metassl.data.sampling import UnlabeledSchedule, _perm, batch_indices
from metassl.errors import UserError
from tests.conftest import make_tiny_data, train_killed_after


def test_the_batch_grows_linearly_in_multiples_of_the_processes_then_stays_full():
    s = UnlabeledSchedule(size=64, start=8, rampup=8, warm=4, world=2)
    sizes = [s.size_at(it) for it in range(4, 16)]
    assert sizes[0] == 8 and sizes[8:] == [64] * 4
    assert all(a <= b for a, b in zip(sizes, sizes[1:])) and all(n % 2 == 0 for n in sizes)
    assert [s.first(it) for it in range(4, 17)] == [sum(sizes[:k]) for k in range(13)]   # iterations back to back
    fixed = UnlabeledSchedule(64)
    assert [fixed.size_at(it) for it in (0, 99)] == [64, 64] and fixed.first(7) == 7 * 64


def test_the_growing_batches_walk_the_passes_without_gaps_or_repeats():
    s, pool = UnlabeledSchedule(size=12, start=2, rampup=5, warm=0), torch.arange(30)
    drawn = torch.cat([batch_indices(it, pool, s.size_at(it), 7, first=s.first(it)) for it in range(9)])
    order = torch.cat([_perm(30, 7, e) for e in range(3)])
    assert torch.equal(drawn, order[:len(drawn)])


def test_a_run_counts_the_images_its_growing_batches_drew_and_resumes_exactly(tmp_path, monkeypatch):
    from metassl.run import checkpoint
    from metassl.train import train

    cfg = dataclasses.replace(Config(), dataset="tiny", algorithm="fixmatch", model="cnn", num_labels=16,
                              batch_size=8, unlabeled_batch_size=16, unlabeled_batch_start=4, unlabeled_batch_rampup=4,
                              labeled_warmup=2, iterations=8, warmup=1, eval_every=4, log_every=2,
                              checkpoint_every=5, device="cpu", eval_batch_size=64).resolved()
    data = make_tiny_data(n_train=96, n_test=24, size=8)
    torch.set_num_threads(1)
    train(cfg, tmp_path / "full", data=data, quiet=True)
    evals = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    s = UnlabeledSchedule(16, 4, 4, warm=2)
    assert [r["images_seen"] for r in evals if r["kind"] == "eval"] == [8 * n + s.first(n) for n in (4, 8)]

    train_killed_after(cfg, tmp_path / "cut", data, monkeypatch)   # at iteration 5, in the middle of the growth
    train(cfg, tmp_path / "cut", data=data, quiet=True, resume=True)
    a, b = (checkpoint.load(tmp_path / n)["model"] for n in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["metamixup", "supervised"])
def test_algorithms_that_cannot_grow_their_unlabeled_batch_refuse_it(name):
    cfg = dataclasses.replace(Config(), algorithm=name, unlabeled_batch_start=8, unlabeled_batch_rampup=10).resolved()
    with pytest.raises(UserError, match="unlabeled_batch_start=8 grows the unlabeled batch") as e:
        build_algorithm(cfg)
    assert "\n" not in str(e.value)


def test_a_start_without_room_or_time_to_grow_is_one_line():
    for bad in (dict(unlabeled_batch_start=64), dict(unlabeled_batch_start=8)):
        with pytest.raises(UserError, match="unlabeled_batch_start"):
            dataclasses.replace(Config(), **bad).resolved()
