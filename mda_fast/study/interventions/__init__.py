"""Causal interventions: retrain from the window-start checkpoint with the top-scored samples deleted or duplicated.

Every arm is ``branch_from_checkpoint(run_dir/step{start_step}, data, out_dir/<arm>/seed<s>, interventions=...)``
trained to ``train_until``, so all arms share initial weights, optimizer state, LR schedule, data order and the
trainer's RNG state; they differ only by their ``Interventions`` (see ``mda_fast.train`` for the exact
semantics: a deleted sample contributes nothing and every other sample keeps its weight ``1 / (B*T)``).

Sets. The window holds the ``n = (end_step - start_step) * batch_size`` global indices ``start*B .. end*B - 1``.
Samples are ranked by their score (``score_column``, or the mean over the score columns when ``None``), ties
broken by the lower global index; ``k = stats.top_count(n, top_frac)`` (``ceil(top_frac * n)``, at least 1:
the same top set as the analysis reports).

* ``baseline``: no intervention.
* ``delete-top``: the ``k`` highest-scored samples deleted (score > 0 means the sample pushes the head into
  existence, see ``mda_fast.core.influence``).
* ``delete-bottom``: the ``k`` lowest-scored (most negative) samples deleted.
* ``delete-random``: ``k`` samples drawn uniformly without replacement from the window minus the top set.
* ``delete-matched`` (optional): a category-matched random control. ``k`` samples drawn from the window minus the
  top set with the top set's composition by dominant category (the category holding most of a row's tokens, from
  the corpus sidecar ``<data>.categories.npy`` or ``categories=``): for each category as many samples as the top
  set has. It asks whether the scores pick better samples than "random rows of the categories MDA favours".
* ``augment-top`` / ``augment-random`` / ``augment-matched``: the top / random / matched set duplicated:
  ``augment_copies`` extra copies of each sample appended as extra rows (``insert_mode="append"``, default;
  ``"replace"`` overwrites random slots instead) at ``augment_steps``, round-robin in rank order (top: highest score first; random: draw order).
  Default ``augment_steps``: the first half of the window, ``start_step .. start_step + ceil(W/2) - 1``.

Seeds. Seed ``s`` draws the random set (``numpy.random.default_rng([s, 0x5EED])``), shared by ``delete-random`` and
``augment-random`` of that seed (the matched set uses ``[s, 0x3A7C]``), and is the ``Interventions.seed`` that
picks replaced slots in ``"replace"`` mode.
Nothing else depends on it. Arms that do not depend on the seed (``baseline``, ``delete-top``, ``delete-bottom``,
and ``augment-top`` in append mode) are trained once and their curves recorded under every seed.

Measurements (``eval_fn``, at ``eval_steps``: ``start_step``, every ``eval_every`` steps after it up to
``train_until``, ``end_step`` and ``train_until``):

* ``head_scores`` ``[n_layers][n_heads]``: every head's prefix-matching score (one ``localize_all`` pass, which
  also gives ``prev_token_scores``); ``target_scores``: the target heads'; ``head_score``: their mean.
* ``probe_f``: the induction probe's ``f`` (sum of log p(induction target) over the probe batch).
* ``loss``: mean token cross-entropy on the held-out rows; ``icl``: loss at a late token minus loss at an early
  token, averaged over held-out rows (negative = in-context learning). Olsson et al. use tokens 50 and 500 of a
  long context; here token positions ``round(50/512*T)`` and ``round(500/512*T)`` (1-based index of the predicted
  token, ``T = seq_len - 1``; 13 and 125 for T=128), each averaged over a band of ``±icl_band`` tokens.
* Held-out rows: ``heldout_rows`` (global row indices), default the last ``n_heldout`` rows of the data file,
  which must lie at or after step ``train_until`` (so no arm ever trains on them).

Derived figures per arm and seed: ``emergence_step`` (first eval step with ``head_score >= threshold``; ``None``
if never; per target in ``emergence_step_per_target``), ``area_vs_baseline`` (trapezoid of ``head_score - the
baseline's`` over the eval steps, same seed; units score x steps), and changes vs baseline of ``icl``,
``head_score``, ``loss`` at ``end_step`` and ``train_until``. ``summary`` gives their mean and std across seeds
(:func:`summary.summarize`, the one summary of intervention results).

Modules: :mod:`.selection` (sets and arm plans), :mod:`.evaluation` (measurements and derived figures),
:mod:`.summary` (the summary), :mod:`.config` (``InterventionConfig``), :mod:`.runner` (``run_interventions``).
"""

from __future__ import annotations

from .config import InterventionConfig
from .evaluation import add_seed_figures, derive, emergence_step, heldout_tokens, icl_positions, make_eval_fn
from .runner import ARMS, DEFAULT_ARMS, OUTPUT_FILE, RESULT_FILE, load_interventions, run_interventions
from .selection import MATCHED_STREAM, RANDOM_STREAM, ArmPlan, is_deterministic, plan_arms, select_sets
from .summary import intervention_summary, mean_std, summarize

__all__ = [
    "ARMS",
    "DEFAULT_ARMS",
    "InterventionConfig",
    "ArmPlan",
    "select_sets",
    "plan_arms",
    "icl_positions",
    "make_eval_fn",
    "derive",
    "summarize",
    "intervention_summary",
    "run_interventions",
    "load_interventions",
]
