"""Streaming the extra pool against keeping it on the device: batch assembly time and a training step (CPU).

    python tools/bench_extra_pool.py   (writes a 20,000-image 28x28 pool to /tmp/recipe_pool.npz first)
"""

import time

import numpy as np
import torch

from taylorat import data as datasets
from taylorat.data.extra import MixedLoader, open_pool
from taylorat.models import create
from taylorat.objectives import Method, Threat
from taylorat.train.step import train_step

rng = np.random.default_rng(0)
np.savez("/tmp/recipe_pool.npz", image=rng.integers(0, 256, (20000, 28, 28, 1), dtype=np.uint8),
         label=rng.integers(0, 10, 20000))
pool = open_pool("/tmp/recipe_pool.npz", 1, 28, 10)
x = torch.randint(0, 256, (2048, 1, 28, 28), dtype=torch.uint8); y = torch.randint(0, 10, (2048,))
res = {}
for rnd in range(3):
    for on_dev in (True, False):
        ld = MixedLoader(datasets.DeviceLoader(x, y, 64, "cpu", crop=True, pad=2, seed=0), pool, 64, on_dev, seed=0)
        t0 = time.perf_counter(); n = sum(1 for _ in ld.shard_batches(1 + rnd, 0, 1))
        res.setdefault(on_dev, []).append((time.perf_counter() - t0) / n)
model = create("small_cnn", in_channels=1, image_size=28); opt = torch.optim.SGD(model.parameters(), lr=0.01)
method = Method(base="trades", eta=0.2, threat=Threat(eps=0.1, step=0.01, steps=10))
xb, yb, _ = next(iter(ld.shard_batches(1, 0, 1)))
ts = []
for _ in range(3):
    t0 = time.perf_counter(); train_step(model, opt, method, xb, yb); ts.append(time.perf_counter() - t0)
dev, st, step = min(res[True]), min(res[False]), min(ts)
print(f"batch on device {dev*1e3:.2f} ms, streamed {st*1e3:.2f} ms, step {step*1e3:.1f} ms; "
      f"step ratio {(step + st) / (step + dev):.3f}")
