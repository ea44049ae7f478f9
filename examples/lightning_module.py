"""The Taylor loss in a PyTorch Lightning module (``pip install 'taylorat[lightning]'``).

    python examples/lightning_module.py --devices 2     # DDP on 2 CPU processes (strategy="ddp")

Lightning wraps the LightningModule in DDP, so a forward through ``self(...)`` is a DDP forward:
``forward`` runs ``PairForward`` (the clean and the adversarial pass together) and
``training_step`` gives its outputs to ``trades_taylor_from_outputs``. The attack runs on the
plain model, in eval mode, before that forward.
"""

import argparse
import os

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from taylorat.attacks import pgd
from taylorat.models import create
from taylorat.objectives import PairForward, randomized_weights, trades_taylor_from_outputs
from taylorat.train import sync_bn


class TaylorModule(L.LightningModule):
    def __init__(self, eps: float = 0.1, world: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.model = create("small_cnn", num_classes=10, in_channels=1, image_size=8)
        if world > 1:  # BatchNorm over the global batch, as one process would see it
            self.model = sync_bn.convert(self.model, torch.device("cpu"))
        self.pair = PairForward(self.model)
        self.eps, self.world = eps, world

    def forward(self, x, x_adv):
        return self.pair(x, x_adv)

    def training_step(self, batch, idx):
        x, y = batch
        self.model.eval()
        with randomized_weights(self.model, std=1e-4, scope="conv",
                                generator=torch.Generator().manual_seed(100 + idx)):
            x_adv = pgd(self.model, x, eps=self.eps, step=max(self.eps / 4, 1e-3), steps=3, loss="kl",
                        start="normal")
        self.model.train()
        z, h, za, ha = self(x, x_adv)

        def global_stats(g):
            if self.world > 1:
                g = g / self.world  # equal shares: the mean over ranks is the global-batch statistic
                dist.all_reduce(g)
            return g

        return trades_taylor_from_outputs(z, h, za, ha, y, beta=6.0, eta=0.2, stats_reduce=global_stats).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)


def data(steps: int, batch: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    xs, ys = [], []
    for _ in range(steps):
        xs.append(torch.rand(batch, 1, 8, 8, generator=g))
        ys.append(torch.randint(0, 10, (batch,), generator=g))
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--eps", type=float, default=0.1)
    p.add_argument("--out")
    args = p.parse_args()
    module = TaylorModule(args.eps, args.devices)
    # each rank takes a contiguous half of every global batch: the sampler is not shuffled, the batch is B / world
    loader = DataLoader(data(args.steps, args.batch), batch_size=args.batch // args.devices, shuffle=False)
    trainer = L.Trainer(accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
                        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        use_distributed_sampler=False, enable_model_summary=False)
    if args.devices > 1:  # give every rank its contiguous share of each global batch, as DDP's sampler would not
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        ds = data(args.steps, args.batch)
        half = args.batch // args.devices
        idx = torch.cat([torch.arange(s * args.batch + rank * half, s * args.batch + (rank + 1) * half)
                         for s in range(args.steps)])
        loader = DataLoader(TensorDataset(ds.tensors[0][idx], ds.tensors[1][idx]), batch_size=half, shuffle=False)
    trainer.fit(module, loader)
    if args.out:
        rank = trainer.global_rank
        torch.save({k: v.detach().clone() for k, v in module.model.state_dict().items()},
                   os.path.join(args.out, f"rank{rank}.pt"))


if __name__ == "__main__":
    main()
