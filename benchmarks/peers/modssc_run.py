"""ModSSC 1.2.2's own FixMatch / FlexMatch on Fashion-MNIST, metassl's split and network (runs in .venv-modssc).

    benchmarks/peers/.venv-modssc/bin/python benchmarks/peers/modssc_run.py --algorithm fixmatch \
        --iterations 200 --split runs/x/split.json --out /tmp/modssc.json

What ModSSC needs from its user, done here with its own pieces:
- Its FixMatch/FlexMatch train on one fixed weak view and one fixed strong view per unlabeled image
  (`X_u_w`, `X_u_s`), made in advance. We make them with ModSSC's augmentation ops (crop with reflect
  padding, flip; strong adds Cutout: ModSSC has no RandAugment) and remake them once per pass over the
  unlabeled set; the labeled images get a fixed weak view on the same cadence. View building is timed
  apart from training (`views_wall_s`).
- It trains whole epochs; to stop at an exact iteration count, its batches-per-epoch helper
  (`num_batches`, imported into the method's module) is overridden and `fit()` is called in chunks that
  end at each pass over the unlabeled set. Each chunk gets its own seed, so the batch order differs.
- ModSSC has no supervised method that takes a user network (its `supervised` trains its own classifier
  zoo), so supervised-only is not run for ModSSC.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MATCHED, Meter, SmallCNN, channel_stats, load_fmnist, load_split, peer_args, seed_all, test_error, write_result  # noqa: E402

from modssc.data_augmentation import AugmentationPlan, StepConfig, build_pipeline  # noqa: E402
from modssc.data_augmentation.types import AugmentationContext  # noqa: E402
from modssc.inductive.deep import TorchModelBundle  # noqa: E402
from modssc.inductive.methods import fixmatch as fixmatch_mod, flexmatch as flexmatch_mod  # noqa: E402
from modssc.inductive.methods import free_match as freematch_mod  # noqa: E402
from modssc.inductive.types import DeviceSpec, InductiveDataset  # noqa: E402


def views(pipeline, x01: np.ndarray, seed: int, epoch: int, mean: float, std: float) -> torch.Tensor:
    """(N, 28, 28) float32 in [0, 1] -> one augmented, normalised view (N, 1, 28, 28), image by image (ModSSC's
    API; its NumPy path, measured 1.5x faster per image here than its torch path)."""
    out = np.stack([pipeline.apply(x01[i], ctx=AugmentationContext(seed=seed, sample_id=i, epoch=epoch))
                    for i in range(len(x01))])
    return torch.from_numpy((out - mean) / std)[:, None].float().contiguous()


def main() -> None:
    a = peer_args(["fixmatch", "flexmatch", "freematch"])

    x_train, y_train, x_test, y_test = load_fmnist()
    lab, unl, digest = load_split(a.split)
    mean, std = channel_stats(x_train)
    x_l01 = x_train[lab].astype(np.float32) / 255
    x_u01 = x_train[unl].astype(np.float32) / 255
    y_l = torch.from_numpy(y_train[lab])

    pad, grey = MATCHED["translate"], 0.5
    weak = build_pipeline(AugmentationPlan((StepConfig("vision.random_crop_pad", {"padding": pad}),
                                            StepConfig("vision.random_horizontal_flip")), modality="vision"))
    strong = build_pipeline(AugmentationPlan((StepConfig("vision.random_crop_pad", {"padding": pad}),
                                              StepConfig("vision.random_horizontal_flip"),
                                              StepConfig("vision.cutout", {"frac": 0.5, "fill": grey})),
                                             modality="vision"))

    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=MATCHED["lr"], momentum=MATCHED["momentum"],
                          weight_decay=MATCHED["weight_decay"])
    bundle = TorchModelBundle(model=model, optimizer=opt)
    B = MATCHED["batch_size"]
    mod, Spec, Method = {"fixmatch": (fixmatch_mod, fixmatch_mod.FixMatchSpec, fixmatch_mod.FixMatchMethod),
                         "flexmatch": (flexmatch_mod, flexmatch_mod.FlexMatchSpec, flexmatch_mod.FlexMatchMethod),
                         "freematch": (freematch_mod, freematch_mod.FreeMatchSpec, freematch_mod.FreeMatchMethod),
                         }[a.algorithm]
    if a.setting == "matched" and a.algorithm == "freematch":   # self-adaptive threshold: no p_cutoff to set
        spec = Spec(model_bundle=bundle, lambda_u=MATCHED["lambda_u"], lambda_e=0.001, ema_p=0.999, mu=1,
                    hard_label=True, use_cat=True, batch_size=B, max_epochs=1)
    elif a.setting == "matched":   # one joint forward as metassl, mu = 1, threshold on plain softmax (T only sharpens soft targets)
        spec = Spec(model_bundle=bundle, lambda_u=MATCHED["lambda_u"], p_cutoff=MATCHED["threshold"], mu=1,
                    hard_label=True, use_cat=True, batch_size=B, max_epochs=1)
    else:                        # ModSSC's own defaults (mu = 7, separate forwards, T = 0.5), our optimiser
        spec = Spec(model_bundle=bundle, batch_size=B, max_epochs=1)
    method = Method(spec)
    mu = spec.mu
    per_pass = math.ceil(len(unl) / (B * mu))      # iterations in one pass over the unlabeled set

    done, chunk_no, t_train, t_views = 0, 0, Meter(), Meter()
    while done < a.iterations:
        n = min(a.iterations - done, per_pass)
        with t_views:
            x_l = views(weak, x_l01, a.seed, chunk_no, mean, std)
            x_uw = views(weak, x_u01, a.seed, chunk_no, mean, std)
            x_us = views(strong, x_u01, a.seed + 7919, chunk_no, mean, std)
        mod.num_batches = lambda _n, _b, n=n: n     # shim: exactly n iterations in this fit() call
        data = InductiveDataset(X_l=x_l, y_l=y_l, X_u_w=x_uw, X_u_s=x_us)
        with t_train:
            method.fit(data, device=DeviceSpec("cpu"), seed=a.seed * 100_003 + chunk_no)
        done += n
        chunk_no += 1

    err = test_error(model, x_test, y_test, mean, std)
    write_result(a.out, toolkit="modssc 1.2.2", algorithm=a.algorithm, setting=a.setting, seed=a.seed,
                 iterations=a.iterations, images=a.iterations * B * (1 + mu), train_wall_s=t_train.wall,
                 train_cpu_s=t_train.cpu, views_wall_s=t_views.wall, views_cpu_s=t_views.cpu,
                 test_error=err, split_digest=digest, evaluated="raw")


if __name__ == "__main__":
    main()
