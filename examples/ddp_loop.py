"""Your own training loop with the Taylor loss under DistributedDataParallel.

    torchrun --nproc_per_node 2 examples/ddp_loop.py --steps 3            # 2 ranks (gloo on CPU, NCCL on GPUs)
    python examples/ddp_loop.py --steps 3                                  # the same global batches, one process

The one rule: the module DDP wraps must be the one that runs the step's forward passes. Wrap
``PairForward(model)`` (the clean and the adversarial pass as one module call) in DDP, and give
its outputs to ``trades_taylor_from_outputs``; ``stats_reduce`` makes the Taylor head statistics
those of the global batch, BatchNorm normalises over the global batch (``sync_bn``), and each rank
weighs its loss by its share so that DDP's gradient average is the global-batch mean: the ranks
end with the weights one process gets on the same global batches. Passing the DDP-wrapped model, or its ``.module``, to
``trades_taylor_loss`` is refused with a message that points here.
"""

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from taylorat.attacks import pgd
from taylorat.models import create
from taylorat.objectives import PairForward, randomized_weights, trades_taylor_from_outputs
from taylorat.train import sync_bn


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--out", help="save this rank's final weights here (rankN.pt)")
    args = p.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")  # "nccl" on GPUs
    torch.manual_seed(0)  # the same initial weights on every rank
    model = create("small_cnn", num_classes=10, in_channels=1, image_size=8)
    if world > 1:  # BatchNorm over the global batch (torch's SyncBatchNorm on GPUs, an all-reduce one on CPUs)
        model = sync_bn.convert(model, torch.device("cpu"))
    pair = PairForward(model)
    forward = DDP(pair) if world > 1 else pair
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    for step in range(args.steps):
        x = torch.rand(args.batch, 1, 8, 8, generator=data)  # the global batch, the same on every rank
        y = torch.randint(0, 10, (args.batch,), generator=data)
        lo, hi = rank * args.batch // world, (rank + 1) * args.batch // world  # this rank's share
        xs, ys = x[lo:hi], y[lo:hi]
        share = (hi - lo) / args.batch
        model.eval()  # the inner maximisation on w + u (seeded alike on every rank)
        noise = torch.Generator().manual_seed(100 + step)
        with randomized_weights(model, std=1e-4, scope="conv", generator=noise):
            x_adv = pgd(model, xs, eps=args.eps, step=max(args.eps / 4, 1e-3), steps=3, loss="kl", start="normal",
                        generator=noise, rows=(lo, hi, args.batch))  # the shard starts where the batch would
        model.train()
        z, h, za, ha = forward(xs, x_adv)  # one DDP forward for both passes

        def global_stats(g: torch.Tensor) -> torch.Tensor:  # the head statistic of the global batch
            g = g * share
            if world > 1:
                dist.all_reduce(g)
            return g

        loss = trades_taylor_from_outputs(z, h, za, ha, ys, beta=6.0, eta=0.2, stats_reduce=global_stats).loss
        opt.zero_grad()
        (loss * share * world).backward()  # DDP averages over ranks: this makes it the global-batch mean
        opt.step()
        shown = loss.detach() * share  # this rank's share of the global-batch loss
        if world > 1:
            dist.all_reduce(shown)  # summed over the ranks: the loss of the global batch, as one process has it
        if rank == 0:
            print(f"step {step}: loss {shown.item():.4f} (global batch of {args.batch})")
    if args.out:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                   os.path.join(args.out, f"rank{rank}.pt"))
    if world > 1:  # free DDP (its reducer holds the group) before closing it: left to exit, a gloo rank can abort
        dist.barrier()  # every rank's last collective has completed
        del forward
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
