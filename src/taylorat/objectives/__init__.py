"""Training objectives: TRADES / AT / MART / AWP-TRADES with the Taylor terms, randomized weights."""

from .at import at_taylor_from_outputs
from .awp import AWP
from .combine import LossParts, with_taylor
from .mart import mart_taylor_from_outputs
from .method import BASES, METHODS, ORDER_DEFAULTS, Method, Threat, split_name
from .pair import PairForward
from .taylor import (
           TaylorTerms,
           default_c,
           head_grad_rowsums,
           kl_to_target,
           soft_targets,
           taylor_terms,
)
from .trades import trades_taylor_from_outputs, trades_taylor_loss
from .weight_noise import SCOPES, noise_parameters, randomized_weights

__all__ = ["trades_taylor_loss", "trades_taylor_from_outputs", "taylor_terms", "TaylorTerms", "head_grad_rowsums",
           "soft_targets", "kl_to_target", "default_c", "LossParts", "randomized_weights", "noise_parameters",
           "SCOPES", "Method", "PairForward", "Threat", "METHODS", "BASES", "ORDER_DEFAULTS", "split_name", "AWP",
           "at_taylor_from_outputs", "mart_taylor_from_outputs", "with_taylor"]
