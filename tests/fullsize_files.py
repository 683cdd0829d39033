"""Full-size CIFAR-10 and SVHN files made from Fashion-MNIST, then the paper's presets run on them
(docs/results/FINDINGS.md).

    python tests/fullsize_files.py /tmp/fullsize                     # write the files, time one load of each
    python tests/fullsize_files.py /tmp/fullsize --train 3 --json runs/fullsize/fullsize.json
    python tests/fullsize_files.py /tmp/fullsize --skip-write --train 300 --device cuda --nice 0 --threads 0 \
        --json runs/fullsize/fullsize-it300.json                   # the 300-step runs of docs/results/FINDINGS.md
    (on a CPU add --checkpoint-every 10: a run cut short by a session's end resumes when the command is re-run)

No CIFAR or SVHN file exists on these machines, so the presets' loaders had only read tiny hand-made files.
Fashion-MNIST (60k + 10k, 28x28 grey) is padded to 32x32 with zeros and its grey copied into R, G and B, then
written in each data set's own on-disk format at its real size:

    DIR/cifar-10-batches-py/  data_batch_1..5 (10,000 rows each), test_batch (10,000), batches.meta
        pickled dicts (protocol 2, strings as Python 2 wrote them) of b"data": uint8 (N, 3072), each row the
        R, G, B 32x32 planes row-major, b"labels": list of int 0..9, b"batch_label", b"filenames";
        batches.meta holds b"label_names" (Fashion-MNIST's classes).
    DIR/svhn/  train_32x32.mat (73,257 images), test_32x32.mat (26,032)
        MATLAB 5 files (compressed, as the originals), X: uint8 (32, 32, 3, N), y: uint8 (N, 1) in 1..10, 10 = digit 0.
        SVHN has more images than Fashion-MNIST: rows drawn with replacement from its train / test set (seed 0).

`metassl train ... data_dir=DIR` finds both (the loader looks in DIR/cifar-10-batches-py and DIR/svhn).
--train N runs `metassl train --preset cifar10-4000` and `--preset svhn-1000` for N iterations each (evaluated
once, at the end, on the whole test set) under `nice`, and writes per run: wall seconds of the child process
(start-up, load, split, train, evaluation), its peak RSS (getrusage of that child), and results.json's
train_seconds, images_per_second and test_error.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import struct
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CIFAR10_BATCH = 10_000                       # rows per data_batch_i; 5 batches = 50,000
SVHN_TRAIN, SVHN_TEST = 73_257, 26_032       # images in the real train_32x32.mat / test_32x32.mat
PRESETS = ("cifar10-4000", "svhn-1000")


def fashion_mnist_32(src: str | Path = FASHION_MNIST) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as (x_train (60000, 32, 32, 3), y_train, x_test (10000, 32, 32, 3), y_test), uint8 / int64:
    2 zero pixels on every side, grey copied into 3 channels."""
    from metassl.data import load_dataset
    d = load_dataset("fashion-mnist", data_dir=str(src))
    return to_rgb32(d.x_train), d.y_train, to_rgb32(d.x_test), d.y_test


def to_rgb32(x: np.ndarray) -> np.ndarray:
    """(N, 28, 28, 1) uint8 -> (N, 32, 32, 3): zero border of 2, channel repeated."""
    return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=3)


def cifar_rows(x: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072): the R plane, then G, then B, each row-major (CIFAR's layout)."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote the CIFAR files: every str and bytes (numpy's raw buffer
    included) as a BINSTRING opcode, which Python 3 reads back as bytes under encoding="bytes". Python 3's
    own protocol 2 would route bytes through `_codecs.encode` instead (and store bytes >= 0x80 as 2 bytes)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        head = (pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256
                else pickle.BINSTRING + struct.pack("<i", len(data)))
        self.write(head + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def _dump(path: Path, obj: dict) -> None:
    """Pickle protocol 2 in Python 2's encoding (`Py2Pickler`), written atomically."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)
    os.replace(tmp, path)


def write_cifar10(dest: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  classes: list[str]) -> Path:
    """CIFAR-10 python batches from the first 50,000 train images and the first 10,000 test images; returns
    the cifar-10-batches-py folder."""
    out = dest / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(5):
        rows = slice(i * CIFAR10_BATCH, (i + 1) * CIFAR10_BATCH)
        _dump(out / f"data_batch_{i + 1}", {
            b"batch_label": f"training batch {i + 1} of 5".encode(), b"labels": [int(v) for v in y_train[rows]],
            b"data": cifar_rows(x_train[rows]),
            b"filenames": [f"fmnist_train_{j:05d}.png".encode() for j in range(rows.start, rows.stop)]})
    _dump(out / "test_batch", {
        b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in y_test[:CIFAR10_BATCH]],
        b"data": cifar_rows(x_test[:CIFAR10_BATCH]),
        b"filenames": [f"fmnist_test_{j:05d}.png".encode() for j in range(CIFAR10_BATCH)]})
    _dump(out / "batches.meta", {b"num_cases_per_batch": CIFAR10_BATCH, b"num_vis": 3072,
                                 b"label_names": [c.encode() for c in classes]})
    return out


def svhn_draw(n_source: int, n: int, seed: int) -> np.ndarray:
    """Indices (n,) into the source images, drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_source, n)


def write_svhn_mat(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """One SVHN format-2 file: X uint8 (32, 32, 3, N), y uint8 (N, 1) with label 0 stored as 10."""
    from scipy.io import savemat
    y_mat = np.where(y == 0, 10, y).astype(np.uint8).reshape(-1, 1)
    tmp = path.with_suffix(".tmp.mat")
    savemat(str(tmp), {"X": np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "y": y_mat}, do_compression=True)
    os.replace(tmp, path)


def write_svhn(dest: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               seed: int = 0, sizes: tuple[int, int] = (SVHN_TRAIN, SVHN_TEST)) -> tuple[np.ndarray, np.ndarray]:
    """train_32x32.mat / test_32x32.mat in dest/svhn; returns the source rows drawn for each (train, test)."""
    out = dest / "svhn"
    out.mkdir(parents=True, exist_ok=True)
    i_train, i_test = svhn_draw(len(x_train), sizes[0], seed), svhn_draw(len(x_test), sizes[1], seed + 1)
    write_svhn_mat(out / "train_32x32.mat", x_train[i_train], y_train[i_train])
    write_svhn_mat(out / "test_32x32.mat", x_test[i_test], y_test[i_test])
    return i_train, i_test


def write_all(dest: Path, src: str | Path = FASHION_MNIST, seed: int = 0) -> dict:
    """Both data sets into dest; returns seconds spent and file sizes."""
    from metassl.data.sources import FASHION_CLASSES
    t0 = time.perf_counter()
    xtr, ytr, xte, yte = fashion_mnist_32(src)
    cifar = write_cifar10(dest, xtr, ytr, xte, yte, FASHION_CLASSES)
    t1 = time.perf_counter()
    write_svhn(dest, xtr, ytr, xte, yte, seed)
    t2 = time.perf_counter()
    sizes = {str(p.relative_to(dest)): p.stat().st_size for p in sorted([*cifar.iterdir(), *(dest / "svhn").iterdir()])}
    return {"write_seconds": {"cifar10": round(t1 - t0, 2), "svhn": round(t2 - t1, 2)}, "bytes": sizes}


def time_loads(dest: Path) -> dict:
    """Seconds for load_dataset to read each data set from dest, and the shapes it returns."""
    from metassl.data import load_dataset
    out = {}
    for name in ("cifar10", "svhn"):
        t0 = time.perf_counter()
        d = load_dataset(name, data_dir=str(dest))
        out[name] = {"load_seconds": round(time.perf_counter() - t0, 2), "x_train": list(d.x_train.shape),
                     "x_test": list(d.x_test.shape), "path": d.extra["path"]}
    return out


def train_run(preset: str, dest: Path, iterations: int, threads: int, nice: int, out: Path,
              device: str = "cpu", checkpoint_every: int = 0) -> dict:
    """`metassl train --preset <preset> data_dir=dest` for `iterations`, evaluated once at the end; wall seconds
    and peak RSS of the child, plus its results.json. A run cut short after a checkpoint (a session's end on a
    slow CPU) resumes from it when called again; then the child's numbers are this call's, results.json's sums."""
    from metassl.run.rundir import RunDir
    overrides = [f"data_dir={dest}", f"iterations={iterations}", f"eval_every={iterations}",
                 f"checkpoint_every={checkpoint_every or iterations}", f"threads={threads}", f"device={device}"]
    keys = ("train_seconds", "wall_seconds", "images_per_second", "test_error", "num_labels", "machine")
    if (out / "results.json").exists():                       # finished in an earlier call: report, do not retrain
        return {"finished_earlier": True, **{k: json.loads((out / "results.json").read_text())[k] for k in keys}}
    resumed = RunDir(out).has_checkpoint()
    run = ["--resume", str(out)] if resumed else ["--preset", preset, "--out", str(out), "--force", *overrides]
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "metassl", "train", *run, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)                 # rusage of this child alone
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited with {rc}")
    res = json.loads((out / "results.json").read_text())
    return {"command": "metassl train --preset " + preset + " " + " ".join(overrides) + f" (under nice -n {nice})",
            "resumed": resumed,
            "child_wall_seconds": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "child_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            **{k: res[k] for k in keys}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dest", type=Path, help="folder for the files (keep it out of the repository: /tmp or runs/)")
    p.add_argument("--src", default=FASHION_MNIST, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--seed", type=int, default=0, help="seed of SVHN's draw with replacement")
    p.add_argument("--train", type=int, default=0, metavar="N", help="run both presets for N iterations (0 = no)")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--threads", type=int, default=2, help="torch threads of each run (0 = torch's default)")
    p.add_argument("--nice", type=int, default=15, help="niceness of each run (the machine is shared)")
    p.add_argument("--device", default="cpu", help="device of each run: cpu | cuda | auto")
    p.add_argument("--runs", type=Path, default=Path("runs/fullsize"), help="where the run folders go")
    p.add_argument("--json", type=Path, help="write everything measured here")
    p.add_argument("--skip-write", action="store_true", help="the files are already in dest")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                   help="checkpoint each run every K iterations, so a cut-short run resumes (0 = at the end only)")
    args = p.parse_args()

    report: dict = {"date": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} cpu, "
                    f"{platform.platform()}", "dest": str(args.dest)}
    if not args.skip_write:
        report["files"] = write_all(args.dest, args.src, args.seed)
        print(json.dumps(report["files"]), flush=True)
    report["load"] = time_loads(args.dest)
    print(json.dumps(report["load"]), flush=True)
    for preset in args.presets if args.train else ():
        report.setdefault("runs", {})[preset] = r = train_run(preset, args.dest, args.train, args.threads, args.nice,
                                                              args.runs / f"{preset}-it{args.train}", args.device,
                                                              args.checkpoint_every)
        print(json.dumps({preset: r}), flush=True)
        if args.json:                                     # after each run, so a killed session keeps the first
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
