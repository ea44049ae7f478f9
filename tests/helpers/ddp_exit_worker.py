"""Run by tests under torchrun: ``train()`` a config, then check that nothing of the process group outlives it.

A DDP wrapper left for the interpreter's exit keeps gloo's worker threads and the tensors of its last
collectives alive until Python has stopped handing out the GIL, and the rank aborts after a finished run.
"""

import gc
import sys

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from taylorat.train import load, train

cfg = load(sys.argv[1], sys.argv[2:])
result = train(cfg)
assert result.epochs_done == cfg.optim.epochs, result
assert not dist.is_initialized(), "train() returned with the process group open"
alive = [o for o in gc.get_objects() if isinstance(o, DistributedDataParallel)]
assert not alive, f"train() returned with {len(alive)} DDP wrapper(s) alive: they hold the process group"
print("process group closed and freed", flush=True)
