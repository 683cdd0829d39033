"""Where a training step's time goes outside the kernels: the preset's run with the trainer's parts timed.

    python scripts/loop_parts.py [ITERATIONS] [ALGORITHM]      # default 1000 supervised; idle machine please

Prints ms per iteration of the whole loop (training seconds, evaluation excluded), of `train_step`, of the
batch (sampling, augmentation, normalisation) and of the divergence watch; compare the step with
`metassl bench-step --variants ALGORITHM` run right after (docs/BENCHMARKS.md 1b).
"""
import sys
import tempfile
import time

from metassl import safety
from metassl import train as T
from metassl.config import build_config
from metassl.data import resident

iterations, algorithm = int(sys.argv[1]) if len(sys.argv) > 1 else 1000, sys.argv[2] if len(sys.argv) > 2 else "supervised"
spent = {"step": 0.0, "batch": 0.0, "watch": 0.0}


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        spent[name] += time.perf_counter() - t
        return out
    return wrapper


T.train_step = timed("step", T.train_step)
resident.DeviceData.batch = timed("batch", resident.DeviceData.batch)
safety.DivergenceWatch.update = timed("watch", safety.DivergenceWatch.update)
cfg = build_config("fmnist-1000", None, [f"algorithm={algorithm}", f"iterations={iterations}", "labeled_warmup=0",
                                         f"eval_every={iterations}", f"checkpoint_every={iterations}"])
res = T.train(cfg, tempfile.mkdtemp(), quiet=True)
print(f"{algorithm}, {iterations} iterations: {1000 * res['train_seconds'] / iterations:.1f} ms per iteration; "
      + ", ".join(f"{k} {1000 * v / iterations:.2f}" for k, v in spent.items()))
