"""Old path of the causal interventions: :mod:`mda_fast.study.interventions` (definitions in its docstring)."""

from .study.interventions import *  # noqa: F401,F403
from .study.interventions import (  # noqa: F401
    ARMS,
    DEFAULT_ARMS,
    MATCHED_STREAM,
    OUTPUT_FILE,
    RANDOM_STREAM,
    RESULT_FILE,
    ArmPlan,
    InterventionConfig,
    __all__,  # noqa: F401
    add_seed_figures,
    derive,
    emergence_step,
    heldout_tokens,
    icl_positions,
    intervention_summary,
    is_deterministic,
    load_interventions,
    make_eval_fn,
    plan_arms,
    run_interventions,
    select_sets,
    summarize,
)
