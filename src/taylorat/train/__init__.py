"""Training: run config, schedules and the trainer loop."""

from .config import Config, ConfigError, from_dict, load
from .run_dir import RunDirError
from .schedule import lr_at, paper_checkpoint_epochs
from .trainer import Trainer, TrainingDiverged, TrainResult, build_method, derive_seed, train

__all__ = ["Config", "ConfigError", "load", "from_dict", "train", "Trainer", "TrainResult", "RunDirError",
           "TrainingDiverged", "lr_at", "paper_checkpoint_epochs", "build_method", "derive_seed"]
