"""Attacks: one PGD core (l_inf / l_2; CE, TRADES-KL, CW losses) and small evaluation classes."""

from .accuracy import accuracy, correct_mask
from .attack import CW, PGD, Attack, eval_mode
from .pgd import attack_loss, check_threat, pgd, project, random_start

__all__ = ["pgd", "project", "random_start", "attack_loss", "check_threat", "Attack", "PGD", "CW",
           "eval_mode", "accuracy", "correct_mask"]
