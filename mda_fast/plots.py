"""Old path of the report's plots: :mod:`mda_fast.study.plots`."""
from .study.plots import *  # noqa: F401,F403
from .study.plots import __all__  # noqa: F401
from .study.plots import arm_style, head_name, normalize_emergence, save_png  # noqa: F401
