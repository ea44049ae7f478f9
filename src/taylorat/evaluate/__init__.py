"""Robustness evaluation on a fixed set of test images: clean, PGD-20, CW-20, AutoAttack, transfer, RayS."""

from .report import markdown_table, report_dict, report_markdown, schema, write_report
from .suite import ATTACKS, EvalResult, check_images, evaluate, is_deterministic, masking_flags
from .transfer import model_digest, transfer_examples

__all__ = ["evaluate", "EvalResult", "ATTACKS", "check_images", "is_deterministic", "masking_flags", "report_dict",
           "report_markdown", "markdown_table", "write_report", "schema", "transfer_examples", "model_digest"]
