"""Old path of the causal interventions: :mod:`mda_fast.study.interventions` (definitions in its docstring)."""
from .study.interventions import *  # noqa: F401,F403
from .study.interventions import (ARMS, DEFAULT_ARMS, MATCHED_STREAM, OUTPUT_FILE, RANDOM_STREAM,  # noqa: F401
                                  RESULT_FILE, ArmPlan, InterventionConfig, add_seed_figures, derive, emergence_step,
                                  heldout_tokens, icl_positions, intervention_summary, is_deterministic,
                                  load_interventions, make_eval_fn, plan_arms, run_interventions, select_sets,
                                  summarize)
from .study.interventions import __all__  # noqa: F401
