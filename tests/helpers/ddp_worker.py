"""Run by tests under torchrun: train a config, then save this rank's weights for comparison."""

import sys
from pathlib import Path

from safetensors.torch import save_file

from taylorat.train import load
from taylorat.train import distributed
from taylorat.train.trainer import Trainer

cfg = load(sys.argv[1], sys.argv[2:])
trainer = Trainer(cfg)
trainer.run()
rank = trainer.dist.rank
state = {k: v.detach().cpu().contiguous() for k, v in trainer.model.state_dict().items()}
save_file(state, str(Path(cfg.out_dir) / f"rank{rank}.safetensors"))
distributed.shutdown(trainer.dist)
