"""USB (semilearn 0.3.2)'s own FixMatch / FlexMatch / supervised on Fashion-MNIST, metassl's split and
network (runs in .venv-usb; usb_shims.py makes it run on a CPU-only torch).

    benchmarks/peers/.venv-usb/bin/python benchmarks/peers/usb_run.py --algorithm fixmatch \
        --iterations 200 --split runs/x/split.json --out /tmp/usb.json

USB's documented path for a custom data set: `get_config`, `get_algorithm` with our net builder, its
`BasicDataset` and `get_data_loader` for the loaders, then its training loop (`algorithm.train()`, called
directly: its Trainer calls torch.cuda.set_device). Its hooks do the update (ParamUpdateHook), EMA and
logging; its EvaluationHook and CheckpointHook are left out of the timed loop, and the test error comes
from its own `algorithm.evaluate` (EMA weights, as USB reports) afterwards. Augmentation is USB's: torchvision
crop/flip and its PIL RandAugment(3, 5) (which ends with a Cutout painting an RGB colour, so the grey image
takes an RGB round trip through it). The matched setting replaces its optimiser (Nesterov, no weight decay
on parameters with ndim <= 1) and cosine schedule with plain SGD on every parameter at a constant lr.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import usb_shims  # noqa: E402  (before semilearn)
from common import MATCHED, Meter, SmallCNN, channel_stats, load_fmnist, load_split, peer_args, seed_all, write_result  # noqa: E402

from torchvision import transforms  # noqa: E402
from semilearn import BasicDataset, get_config, get_data_loader  # noqa: E402
from semilearn.algorithms import get_algorithm  # noqa: E402
from semilearn.datasets.augmentation import RandAugment  # noqa: E402


class USBNet(SmallCNN):
    """Our network with the interface USB's algorithms call: forward -> {'logits', 'feat'}."""

    def forward(self, x, only_fc=False, only_feat=False, **kwargs):
        if only_fc:
            return self.fc(x)
        feat = self.features(x)                                   # (N, 128)
        return feat if only_feat else {"logits": self.fc(feat), "feat": feat}

    def group_matcher(self, coarse=False, prefix=""):
        return dict(stem=r"^{}body.0".format(prefix), blocks=r"^{}body\.(\d+)".format(prefix))


def net_builder(num_classes: int = 10, **kwargs) -> USBNet:
    return USBNet(num_classes)


def main() -> None:
    a = peer_args(["fixmatch", "flexmatch", "supervised"])

    x_train, y_train, x_test, y_test = load_fmnist()
    lab, unl, digest = load_split(a.split)
    mean, std = channel_stats(x_train)
    B, N, matched = MATCHED["batch_size"], a.iterations, a.setting == "matched"
    alg = "supervised" if a.algorithm == "supervised" else a.algorithm
    cfg = dict(algorithm=alg, net="usbnet", dataset="fmnist-metassl-split", num_classes=10, num_labels=len(lab),
               batch_size=B, eval_batch_size=1000, epoch=1, num_train_iter=N, num_eval_iter=N, num_log_iter=N,
               seed=a.seed, save_dir=tempfile.mkdtemp(prefix="usb-"), save_name="run", gpu=None,
               distributed=False, world_size=1, rank=0, multiprocessing_distributed=False, img_size=28,
               lb_dest_len=len(lab), ulb_dest_len=len(unl), include_lb_to_ulb=False)
    if matched:   # uratio 1, no EMA (evaluate raw weights), its FixMatch/FlexMatch at tau 0.95, lambda_u 1, hard labels
        cfg.update(uratio=1, ema_m=0.0, lr=MATCHED["lr"], momentum=MATCHED["momentum"],
                   weight_decay=MATCHED["weight_decay"], p_cutoff=MATCHED["threshold"],
                   ulb_loss_ratio=MATCHED["lambda_u"], num_workers=0)
        pad = MATCHED["translate"]
    else:         # USB's classic-CV FixMatch config: uratio 7, EMA 0.999, lr 0.03, wd 5e-4, T 0.5, 1 loader worker
        cfg.update(uratio=7, ema_m=0.999, lr=0.03, momentum=0.9, weight_decay=5e-4, num_workers=1)
        pad = int(28 * (1 - 0.875))                              # its crop_ratio 0.875 -> 3 pixels
    args = get_config(cfg)
    algorithm = get_algorithm(args, net_builder, tb_log=None, logger=None)
    usb_shims.drop_timer_hook(algorithm)
    for name in ("EvaluationHook", "CheckpointHook"):       # out of the timed loop; evaluated below
        algorithm._hooks = [h for h in algorithm._hooks if type(h).__name__ != name]
        algorithm.hooks_dict.pop(name, None)
    if matched:
        algorithm.optimizer = torch.optim.SGD(algorithm.model.parameters(), lr=MATCHED["lr"],
                                              momentum=MATCHED["momentum"], weight_decay=MATCHED["weight_decay"])
        algorithm.scheduler = torch.optim.lr_scheduler.LambdaLR(algorithm.optimizer, lambda it: 1.0)

    norm = [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]
    crop_flip = [transforms.RandomCrop(28, padding=pad, padding_mode="reflect"), transforms.RandomHorizontalFlip()]
    weak = transforms.Compose(crop_flip + norm)
    strong = transforms.Compose(crop_flip + [transforms.Lambda(lambda im: im.convert("RGB")), RandAugment(3, 5),
                                             transforms.Lambda(lambda im: im.convert("L"))] + norm)
    lb = BasicDataset(alg, x_train[lab], y_train[lab], 10, weak, is_ulb=False)
    ulb = BasicDataset(alg, x_train[unl], None, 10, weak, is_ulb=True, strong_transform=strong)
    test = BasicDataset(alg, x_test, y_test, 10, transforms.Compose(norm), is_ulb=False)
    algorithm.loader_dict = {
        "train_lb": get_data_loader(args, lb, B, data_sampler=args.train_sampler, num_iters=N, num_epochs=1,
                                    num_workers=args.num_workers),
        "train_ulb": get_data_loader(args, ulb, B * args.uratio, data_sampler=args.train_sampler, num_iters=N,
                                     num_epochs=1, num_workers=args.num_workers),
        "eval": get_data_loader(args, test, 1000, data_sampler=None, num_workers=0, drop_last=False),
    }

    meter = Meter()
    with meter:
        algorithm.train()
    done = algorithm.it          # USB's supervised loop runs num_train_iter + 1 steps (`it > num_train_iter`)
    metrics = algorithm.evaluate("eval")                     # USB's own: EMA weights (= raw when ema_m = 0)
    err = 100.0 * (1.0 - float(metrics["eval/top-1-acc"]))
    uses_ulb = alg != "supervised"
    write_result(a.out, toolkit="usb 0.3.2", algorithm=a.algorithm, setting=a.setting, seed=a.seed,
                 iterations=done, images=done * B * (1 + args.uratio * uses_ulb),
                 train_wall_s=meter.wall, train_cpu_s=meter.cpu, test_error=err, split_digest=digest,
                 evaluated="ema" if args.ema_m else "raw", num_workers=args.num_workers)


if __name__ == "__main__":
    main()
