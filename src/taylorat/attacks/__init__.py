"""Attacks: one PGD core (l_inf / l_2; CE, TRADES-KL, CW losses), evaluation classes, AutoAttack adapter."""

from .accuracy import accuracy, correct_mask
from .attack import CW, PGD, Attack, eval_mode
from .autoattack import AutoAttack, AutoAttackResult
from .pgd import attack_loss, check_threat, pgd, project, random_start
from .rays import RayS, RaySResult

__all__ = ["pgd", "project", "random_start", "attack_loss", "check_threat", "Attack", "PGD", "CW",
           "eval_mode", "accuracy", "correct_mask", "AutoAttack", "AutoAttackResult",
           "RayS", "RaySResult"]
