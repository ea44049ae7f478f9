"""Robustness evaluation on a fixed set of test images."""

from .report import markdown_table, report_dict, write_report
from .suite import ATTACKS, EvalResult, check_images, evaluate, is_deterministic, make_attack

__all__ = ["evaluate", "EvalResult", "ATTACKS", "make_attack", "check_images", "is_deterministic", "report_dict",
           "markdown_table", "write_report"]
