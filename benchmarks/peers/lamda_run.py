"""LAMDA-SSL 1.0.2's own FixMatch / FlexMatch on Fashion-MNIST, metassl's split and network (runs in .venv-lamda).

    benchmarks/peers/.venv-lamda/bin/python benchmarks/peers/lamda_run.py --algorithm fixmatch \
        --iterations 200 --split runs/x/split.json --out /tmp/lamda.json

Everything is LAMDA-SSL's: estimator, data sets, samplers (with replacement, its only mode that lasts a
whole run), loaders, PIL augmentation, optimiser wrapper, EMA and predict(). Set here: our network, our
normalisation statistics (its configs carry CIFAR-10's), the pixel sizes for 28x28 grey images, and
`prefetch_factor=None` for its loaders (torch rejects 2 with num_workers=0). lamda_shims.py re-adds two
names scikit-learn 1.9 dropped. LAMDA-SSL has no supervised-only deep estimator, so supervised is not run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lamda_shims  # noqa: E402,F401  (before LAMDA_SSL)
from common import MATCHED, Meter, SmallCNN, channel_stats, load_fmnist, load_split, peer_args, seed_all, write_result  # noqa: E402

from sklearn.pipeline import Pipeline  # noqa: E402
from LAMDA_SSL.Algorithm.Classification.FixMatch import FixMatch  # noqa: E402
from LAMDA_SSL.Algorithm.Classification.FlexMatch import FlexMatch  # noqa: E402
from LAMDA_SSL.Augmentation.Vision.Cutout import Cutout  # noqa: E402
from LAMDA_SSL.Augmentation.Vision.RandAugment import RandAugment  # noqa: E402
from LAMDA_SSL.Augmentation.Vision.RandomCrop import RandomCrop  # noqa: E402
from LAMDA_SSL.Augmentation.Vision.RandomHorizontalFlip import RandomHorizontalFlip  # noqa: E402
from LAMDA_SSL.Dataloader.LabeledDataloader import LabeledDataLoader  # noqa: E402
from LAMDA_SSL.Dataloader.UnlabeledDataloader import UnlabeledDataLoader  # noqa: E402
from LAMDA_SSL.Dataset.LabeledDataset import LabeledDataset  # noqa: E402
from LAMDA_SSL.Dataset.UnlabeledDataset import UnlabeledDataset  # noqa: E402
from LAMDA_SSL.Opitimizer.SGD import SGD  # noqa: E402
from LAMDA_SSL.Sampler.RandomSampler import RandomSampler  # noqa: E402
from LAMDA_SSL.Sampler.SequentialSampler import SequentialSampler  # noqa: E402
from LAMDA_SSL.Transform.ToImage import ToImage  # noqa: E402
from LAMDA_SSL.Transform.ToTensor import ToTensor  # noqa: E402
from LAMDA_SSL.Transform.Vision.Normalization import Normalization  # noqa: E402


def main() -> None:
    a = peer_args(["fixmatch", "flexmatch"])

    x_train, y_train, x_test, y_test = load_fmnist()
    lab, unl, digest = load_split(a.split)
    mean, std = channel_stats(x_train)
    B, N, matched = MATCHED["batch_size"], a.iterations, a.setting == "matched"
    mu = 1 if matched else 7                       # LAMDA-SSL's configs: mu = 7

    norm = lambda: Pipeline([("ToTensor", ToTensor(dtype="float", image=True)),  # noqa: E731
                             ("Normalization", Normalization(mean=[mean], std=[std]))])
    pad = (MATCHED["translate"] + 0.5) / 28 if matched else 0.125   # relative; int(pad * 28) = 2 (its default 3)
    weak = Pipeline([("RandomHorizontalFlip", RandomHorizontalFlip()),
                     ("RandomCrop", RandomCrop(padding=pad, padding_mode="reflect"))])
    strong = Pipeline([("RandomHorizontalFlip", RandomHorizontalFlip()),
                       ("RandomCrop", RandomCrop(padding=pad, padding_mode="reflect")),
                       ("RandAugment", RandAugment(n=2, m=10, num_bins=10)),         # its FixMatch config
                       ("Cutout", Cutout(v=0.5, fill=(127,)))])  # grey: a 1-tuple (a number becomes RGB)
    common = dict(
        network=SmallCNN(), mu=mu, epoch=1, num_it_epoch=N, num_it_total=N, eval_it=None, eval_epoch=None,
        device="cpu", augmentation={"weak_augmentation": weak, "strong_augmentation": strong},
        labeled_dataset=LabeledDataset(pre_transform=ToImage(), transform=norm()),
        unlabeled_dataset=UnlabeledDataset(pre_transform=ToImage(), transform=norm()),
        test_dataset=UnlabeledDataset(pre_transform=ToImage(), transform=norm()),
        labeled_sampler=RandomSampler(replacement=True, num_samples=B * N),
        unlabeled_sampler=RandomSampler(replacement=True, num_samples=B * mu * N),
        test_sampler=SequentialSampler(),
        labeled_dataloader=LabeledDataLoader(batch_size=B, num_workers=0, drop_last=True, prefetch_factor=None),
        unlabeled_dataloader=UnlabeledDataLoader(num_workers=0, drop_last=True, prefetch_factor=None),
        test_dataloader=UnlabeledDataLoader(batch_size=1000, num_workers=0, drop_last=False, prefetch_factor=None),
        weight_decay=MATCHED["weight_decay"])
    if matched:   # constant lr, plain momentum, no EMA, T = 1 (its FixMatch thresholds sharpened probabilities)
        common.update(optimizer=SGD(lr=MATCHED["lr"], momentum=MATCHED["momentum"], nesterov=False),
                      scheduler=None, ema_decay=None, threshold=MATCHED["threshold"], lambda_u=MATCHED["lambda_u"])
        if a.algorithm == "fixmatch":
            common.update(T=1.0)
    else:         # its config's optimiser (Nesterov), cosine over 2**20 its (about constant here), EMA 0.999, T 0.5
        common.update(optimizer=SGD(lr=0.03, momentum=0.9, nesterov=True))
    est = (FixMatch if a.algorithm == "fixmatch" else FlexMatch)(**common)

    meter = Meter()
    with meter:
        est.fit(x_train[lab], y_train[lab], x_train[unl])
    pred = np.asarray(est.predict(x_test))             # LAMDA-SSL's predict: EMA weights when it keeps them
    err = 100.0 * float((pred != y_test).mean())
    write_result(a.out, toolkit="lamda-ssl 1.0.2", algorithm=a.algorithm, setting=a.setting, seed=a.seed,
                 iterations=N, images=N * B * (1 + mu), train_wall_s=meter.wall, train_cpu_s=meter.cpu,
                 test_error=err, split_digest=digest, evaluated="ema" if est.ema is not None else "raw")


if __name__ == "__main__":
    main()
