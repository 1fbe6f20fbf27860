"""Old path of the report's plots: :mod:`mda_fast.study.plots` and :mod:`mda_fast.study.intervention_plots`."""

from .study.intervention_plots import arm_style, intervention_curves_png, score_vs_icl_png  # noqa: F401
from .study.plots import *  # noqa: F401,F403
from .study.plots import __all__ as _study_all
from .study.plots import head_name, normalize_emergence, save_png  # noqa: F401

__all__ = _study_all + ["arm_style", "intervention_curves_png", "score_vs_icl_png"]
