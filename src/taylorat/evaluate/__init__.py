"""Robustness evaluation on a fixed set of test images: clean, PGD-20, CW-20, AutoAttack, transfer, RayS."""

from .registry import (
                       AttackResult,
                       AttackSpec,
                       EvalContext,
                       attack_eps,
                       available_attacks,
                       check_dependencies,
                       eps_from_run,
                       expand,
                       get_attack,
                       labels,
                       register_alias,
                       register_attack,
                       unregister_attack,
)
from .report import markdown_table, report_dict, report_markdown, schema, write_report
from .suite import EvalResult, check_images, evaluate, is_deterministic, masking_flags
from .transfer import model_digest, transfer_examples

__all__ = ["evaluate", "EvalResult", "check_images", "is_deterministic", "masking_flags", "report_dict",
           "report_markdown", "markdown_table", "write_report", "schema", "transfer_examples", "model_digest",
           "register_attack", "unregister_attack", "register_alias", "available_attacks", "get_attack", "expand",
           "labels", "attack_eps", "check_dependencies", "eps_from_run", "AttackResult", "AttackSpec", "EvalContext"]
