"""Training objectives: TRADES / AT / MART / AWP-TRADES with the Taylor terms, randomized weights, minimizers."""

# the base modules register themselves in this order: trades, at, mart, awp-trades
from .trades import Trades, trades_taylor_from_outputs, trades_taylor_loss  # isort: skip
from .at import AT, at_taylor_from_outputs  # isort: skip
from .mart import MART, mart_taylor_from_outputs  # isort: skip
from .awp import AWP, AWPTrades  # isort: skip
from .bases import Base, bases, get_base, methods, order_defaults, register_base, split_name, unregister_base
from .combine import LossParts, with_taylor
from .method import Method, Threat
from .minimizers import (
           ASAM,
           SAM,
           AWPMinimizer,
           Minimizer,
           frozen_bn_stats,
           make_minimizer,
           minimizer_options,
           minimizers,
)
from .pair import PairForward
from .taylor import TaylorTerms, default_c, head_grad_rowsums, kl_to_target, soft_targets, taylor_terms
from .weight_noise import SCOPES, noise_parameters, randomized_weights

__all__ = ["trades_taylor_loss", "trades_taylor_from_outputs", "taylor_terms", "TaylorTerms", "head_grad_rowsums",
           "soft_targets", "kl_to_target", "default_c", "LossParts", "randomized_weights", "noise_parameters",
           "SCOPES", "Method", "PairForward", "Threat", "split_name", "AWP", "at_taylor_from_outputs",
           "mart_taylor_from_outputs", "with_taylor", "Base", "register_base", "unregister_base",
           "get_base", "bases", "methods", "order_defaults", "Trades", "AT", "MART", "AWPTrades",
           "Minimizer", "SAM", "ASAM", "AWPMinimizer", "make_minimizer", "minimizers", "minimizer_options",
           "frozen_bn_stats"]
