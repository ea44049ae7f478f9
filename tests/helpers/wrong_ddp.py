"""Run under torchrun: the two wrong ways to use a loss that runs its own forward passes with DDP."""

import gc

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from taylorat.models import create
from taylorat.objectives import trades_taylor_loss

dist.init_process_group("gloo")
torch.manual_seed(0)
model = create("small_cnn", num_classes=10, in_channels=1, image_size=8)
ddp = DDP(model)
x = torch.rand(4, 1, 8, 8)
y = torch.randint(0, 10, (4,))
for name, m in (("wrapped", ddp), ("module", ddp.module)):
    try:
        trades_taylor_loss(m, x, x, y)
        print(f"{name}: ACCEPTED", flush=True)
    except ValueError as e:
        assert "\n" not in str(e)
        print(f"{name}: REFUSED: {e}", flush=True)
dist.barrier()
del ddp, m  # DDP's reducer holds the group: free it before closing the group (left to exit, a rank can abort)
gc.collect()
dist.destroy_process_group()
