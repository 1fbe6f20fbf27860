"""Old path of the influence statistics: :mod:`mda_fast.study.stats`, :mod:`mda_fast.study.tables` and
:func:`mda_fast.study.analyze.analyze`; ``summarize_interventions`` is
:func:`mda_fast.study.interventions.summary.summarize`, the one summary of intervention results."""

from .study.analyze import analyze
from .study.interventions.summary import summarize as summarize_interventions
from .study.stats import *  # noqa: F401,F403
from .study.stats import (
    category_enrichment,
    cumulative_influence,
    influence_per_step,
    jaccard_matrix,
    pearson,
    power_law_fit,
    ranking,
    top_count,
    top_sets,
    validate_scores,
)
from .study.tables import read_table_csv, top_bottom_table, write_table_csv

__all__ = [
    "top_count",
    "validate_scores",
    "ranking",
    "cumulative_influence",
    "power_law_fit",
    "category_enrichment",
    "top_sets",
    "jaccard_matrix",
    "influence_per_step",
    "top_bottom_table",
    "write_table_csv",
    "read_table_csv",
    "analyze",
    "pearson",
    "summarize_interventions",
]
