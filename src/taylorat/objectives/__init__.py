"""Training objectives: TRADES with the Taylor terms, and randomized weights for the attack."""

from .method import METHODS, ORDER_DEFAULTS, Threat, TradesTaylor
from .taylor import TaylorTerms, default_c, head_grad_rowsums, kl_to_target, soft_targets, taylor_terms
from .trades import LossParts, trades_taylor_from_outputs, trades_taylor_loss
from .weight_noise import SCOPES, noise_parameters, randomized_weights

__all__ = ["trades_taylor_loss", "trades_taylor_from_outputs", "taylor_terms", "TaylorTerms", "head_grad_rowsums",
           "soft_targets", "kl_to_target", "default_c", "LossParts", "randomized_weights", "noise_parameters",
           "SCOPES", "TradesTaylor", "Threat", "METHODS", "ORDER_DEFAULTS"]
