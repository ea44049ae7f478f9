"""Run by tests under torchrun: train a config, then save this rank's weights for comparison.

``--record DIR``: save every adversarial batch this rank trained on. ``--replay DIR`` (one
process): train on the adversarial batches that two ranks recorded, concatenated in row order,
instead of attacking. PGD's sign() (or TRADES' nearly flat KL at its start) turns float
rounding that depends on the batch size into different adversarial pixels, so comparing two
layouts attack for attack would measure that, not the data-parallel update; the attack's
sharding is tested exactly on its own (tests/test_attacks.py).
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from taylorat.objectives import Method
from taylorat.train import distributed, load
from taylorat.train.trainer import Trainer

args = sys.argv[1:]
record = replay = None
if "--record" in args:
    i = args.index("--record")
    record, args = Path(args[i + 1]), args[:i] + args[i + 2:]
if "--replay" in args:
    i = args.index("--replay")
    replay, args = Path(args[i + 1]), args[:i] + args[i + 2:]
cfg = load(args[0], args[1:])
trainer = Trainer(cfg)
rank = trainer.dist.rank
perturb, step = Method.perturb, [0]


def recorded_perturb(self, model, x, y=None, **kw):
    if replay is not None:
        parts = [load_file(str(replay / f"rank{r}-step{step[0]}.safetensors"))["x_adv"] for r in (0, 1)]
        x_adv = torch.cat(parts).to(x.device)
        assert x_adv.shape == x.shape
    else:
        x_adv = perturb(self, model, x, y, **kw)
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        save_file({"x_adv": x_adv.cpu().contiguous()}, str(record / f"rank{rank}-step{step[0]}.safetensors"))
    step[0] += 1
    return x_adv


Method.perturb = recorded_perturb
if rank == 0:  # the weights before training (beside the run directory), to measure the update
    out = Path(cfg.out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()},
              str(out.parent / f"{out.name}-init.safetensors"))
trainer.run()
state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
save_file(state, str(Path(cfg.out_dir) / f"rank{rank}.safetensors"))
trainer.close()  # drops the DDP wrapper: the group is freed before the interpreter exits
distributed.shutdown(trainer.dist)
