"""The streaming image-folder path: scan, subset files, reproducible per-iteration batches, eval, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from metassl.data import imagefolder as imf
from metassl.data.sampling import UnlabeledSchedule
from metassl.errors import UserError

PIL = pytest.importorskip("PIL.Image")
CLASSES = ["n01", "n02", "n03"]
S, RESIZE = 32, 36


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path, quality=90)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """3 classes x 6 train JPEGs (40x30) + 2 val each, ImageNet-style names, one junk .txt."""
    root = tmp_path / "imnet"
    for c, name in enumerate(CLASSES):
        for k in range(6):
            _jpeg(root / "train" / name / f"{name}_{k}.JPEG", 10 * c + k)
        for k in range(2):
            _jpeg(root / "val" / name / f"val_{c}{k}.JPEG", 100 + 10 * c + k, (30, 44))
    (root / "train" / "n01" / "notes.txt").write_text("not an image")
    return root


def test_scan(tree: Path) -> None:
    idx = imf.scan(tree, refresh=True)
    assert idx.classes == CLASSES and imf.scan(tree) is idx
    assert len(idx.train_files) == 18 and len(idx.val_files) == 6
    assert idx.train_files[0].decode() == "n01/n01_0.JPEG" and idx.train_path(7).name == "n02_1.JPEG"
    assert idx.train_labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6 and idx.val_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_subset_roundtrip_and_formats(tree: Path, tmp_path: Path) -> None:
    idx = imf.scan(tree, refresh=True)
    out = tmp_path / "sub" / "2perclass.txt"
    chosen = imf.make_subset(idx, out, per_class=2, seed=3)
    assert np.bincount(idx.train_labels[chosen]).tolist() == [2, 2, 2]
    assert np.array_equal(imf.read_subset(idx, out), chosen)
    assert all(line.count("/") == 1 for line in out.read_text().splitlines())
    half = imf.make_subset(idx, tmp_path / "half.txt", fraction=0.5, seed=3)
    assert np.bincount(idx.train_labels[half]).tolist() == [3, 3, 3]
    rels = [idx.train_files[i].decode() for i in chosen]
    for form in (lambda r: r.split("/")[1], lambda r: r, lambda r: "train/" + r):
        f = tmp_path / "form.txt"
        f.write_text("\n".join(form(r) for r in rels) + "\n")
        assert np.array_equal(imf.read_subset(idx, f), chosen)
    (tmp_path / "bad.txt").write_text("n01/n01_0.JPEG\nn09/missing.JPEG\n")
    with pytest.raises(UserError, match="missing.JPEG"):
        imf.read_subset(idx, tmp_path / "bad.txt")


def _batches(idx: imf.FolderIndex, start: int, end: int, workers: int = 0, rank: int = 0, world: int = 1,
             views: tuple[str, ...] = ("weak", "strong")) -> list[imf.RawBatch]:
    lab, unl = np.arange(0, 18, 3), np.setdiff1d(np.arange(18), np.arange(0, 18, 3))
    return list(imf.train_loader(idx, lab, unl, views, 4, UnlabeledSchedule(6), seed=5, start=start, end=end, size=S,
                                 num_workers=workers, rank=rank, world=world))


def _same(a: list[imf.RawBatch], b: list[imf.RawBatch]) -> None:
    assert [x.iteration for x in a] == [x.iteration for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x.x_lb, y.x_lb) and torch.equal(x.y_lb, y.y_lb) and torch.equal(x.y_ulb, y.y_ulb)
        assert all(torch.equal(u, v) for u, v in zip(x.x_ulb, y.x_ulb, strict=True))


def test_train_loader_workers_resume_and_ranks(tree: Path) -> None:
    idx = imf.scan(tree, refresh=True)
    torch.manual_seed(0)
    ref = _batches(idx, 0, 5)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)                    # the loader never touches the global RNG
    b = ref[0]
    assert [x.iteration for x in ref] == [0, 1, 2, 3, 4]
    assert b.x_lb.shape == (4, 3, S, S) and b.x_lb.dtype == torch.uint8 and b.y_lb.dtype == torch.int64
    assert len(b.x_ulb) == 2 and all(x.shape == (6, 3, S, S) and x.dtype == torch.uint8 for x in b.x_ulb)
    assert not torch.equal(b.x_ulb[0], b.x_ulb[1])              # two independent crops of the same images
    assert torch.equal(b.y_lb, torch.from_numpy(idx.train_labels[imf.batch_indices(0, torch.arange(0, 18, 3),
                                                                                   4, 5).numpy()]))
    _same(_batches(idx, 0, 5, workers=2), ref)                  # workers do not change the pixels
    _same(_batches(idx, 3, 5), ref[3:])                         # resume
    shards = [_batches(idx, 0, 5, rank=r, world=2) for r in range(2)]
    for full, r0, r1 in zip(ref, *shards):                      # rank shards concatenate to the world=1 batch
        assert torch.equal(torch.cat([r0.x_lb, r1.x_lb]), full.x_lb)
        assert torch.equal(torch.cat([r0.y_ulb, r1.y_ulb]), full.y_ulb)
        assert all(torch.equal(torch.cat([u, v]), w) for u, v, w in zip(r0.x_ulb, r1.x_ulb, full.x_ulb))
    sup = _batches(idx, 0, 1, views=())[0]
    assert sup.x_ulb == [] and sup.y_ulb is None and torch.equal(sup.x_lb, ref[0].x_lb)


def test_eval_loader(tree: Path) -> None:
    idx = imf.scan(tree, refresh=True)
    loader, positions = imf.eval_loader(idx, S, RESIZE, batch_size=4)
    (x1, y1), (x2, y2) = list(loader)
    assert positions == range(6) and x1.shape == (4, 3, S, S) and x1.dtype == torch.uint8
    assert torch.cat([y1, y2]).tolist() == idx.val_labels.tolist()
    again = torch.cat([x for x, _ in imf.eval_loader(idx, S, RESIZE, batch_size=4)[0]])
    assert torch.equal(again, torch.cat([x1, x2]))              # deterministic
    img = PIL.open(idx.val_path(0)).convert("RGB")
    assert imf.eval_transform(img, S, RESIZE).shape == (3, S, S)
    parts = [imf.eval_loader(idx, S, RESIZE, batch_size=4, rank=r, world=2) for r in range(2)]
    assert [p[1] for p in parts] == [range(0, 3), range(3, 6)]
    assert torch.equal(torch.cat([x for p in parts for x, _ in p[0]]), again)


@pytest.mark.parametrize("workers", [0, 1])
def test_corrupt_image_is_a_user_error(tree: Path, workers: int) -> None:
    bad = tree / "train" / "n02" / "n02_broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    idx = imf.scan(tree, refresh=True)
    k = int(np.flatnonzero(idx.train_files == b"n02/n02_broken.JPEG")[0])
    with pytest.raises(UserError, match="n02_broken.JPEG") as e:
        list(imf.train_loader(idx, [k], [], (), 1, UnlabeledSchedule(0), 0, 0, 1, S, num_workers=workers))
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_streamed_image_folder_trains_through_the_trainer_with_a_labels_file(tree: Path, tmp_path: Path) -> None:
    """The ImageNet path end to end: stream=true, a labeled-subset file, resnet18, workers, resume."""
    from metassl.algorithms import build_config
    from metassl.data.imagefolder import make_subset
    from metassl.train import train

    labels = tmp_path / "subset.txt"
    make_subset(tree, labels, per_class=2, seed=0)
    cfg = build_config(None, None, ["dataset=folder", f"data_dir={tree}", "stream=true", f"labels_file={labels}",
                                    "image_size=32", "model=resnet18", "algorithm=metamixup", "batch_size=4",
                                    "iterations=4", "eval_every=2", "checkpoint_every=2", "log_every=2", "warmup=1",
                                    "workers=1", "device=cpu", "threads=1"])
    res = train(cfg, tmp_path / "run", quiet=True)
    assert res["num_labels"] == 6 and 0.0 <= res["test_error"] <= 100.0
    assert (tmp_path / "run" / "last.pt").exists()


def test_streamed_batches_grow_with_the_unlabeled_schedule(tree: Path) -> None:
    idx = imf.scan(tree, refresh=True)
    lab, unl = np.arange(0, 18, 3), np.setdiff1d(np.arange(18), np.arange(0, 18, 3))
    grow = UnlabeledSchedule(6, start=2, rampup=2, warm=0)
    got = list(imf.train_loader(idx, lab, unl, ("weak", "strong"), 4, grow, seed=5, start=0, end=4, size=S,
                                num_workers=0))
    assert [len(b.y_ulb) for b in got] == [grow.size_at(it) for it in range(4)] == [2, 4, 6, 6]
    assert all(x.shape[0] == len(b.y_ulb) for b in got for x in b.x_ulb)
