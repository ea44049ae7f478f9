"""Analysis: input-space loss landscapes, weight-space flatness, and the training cost table.

May import ``taylorat.models``, ``data``, ``checkpoint`` and ``attacks``; never ``train``,
``studies``, ``bench`` or ``cli``.
"""

from .cost import cost_table, load_jsonl
from .flatness import (
    DEFAULT_ALPHAS,
    SCORE_ALPHA,
    Flatness,
    filter_normalized_direction,
    flatness_report,
    pgd_attack,
    plot_flatness,
    weight_flatness,
)
from .landscape import (
    DEFAULT_RADIUS,
    PANEL_SIZE,
    Landscape,
    input_landscape,
    landscape_report,
    plot_landscapes,
    rademacher,
    sign_gradient,
)

__all__ = ["Landscape", "input_landscape", "plot_landscapes", "landscape_report", "rademacher", "sign_gradient",
           "DEFAULT_RADIUS", "PANEL_SIZE", "Flatness", "weight_flatness", "filter_normalized_direction",
           "plot_flatness",
           "flatness_report", "pgd_attack", "DEFAULT_ALPHAS", "SCORE_ALPHA", "cost_table", "load_jsonl"]
