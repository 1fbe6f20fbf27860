"""The findings of a run, computed from its analysis and intervention results (never assumed), and their text."""

from __future__ import annotations

import numpy as np


def findings(res: dict, targets: dict) -> dict:
    """The run's findings, computed from the analysis (never assumed)."""
    prim = res["primary_target"]
    pt = res["per_target"][prim]
    out = {
        "top_share": pt["cumulative"]["top_share"],
        "top_frac": res["top_fraction"],
        "power_law": pt.get("power_law"),
    }
    if "category_enrichment" in res:
        out["category_enrichment"] = dict(res["category_enrichment"])
    names = res["targets"]
    roles = {f"L{h['layer']}H{h['head']}": h["role"] for h in targets["heads"]}
    jm = np.asarray(res["jaccard"]["matrix"])
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ri, rj = roles.get(names[i].split(":")[0].split(".")[0]), roles.get(names[j].split(":")[0].split(".")[0])
            pairs.append({"a": names[i], "b": names[j], "roles": [ri, rj], "jaccard": float(jm[i, j])})
    out["overlap"] = pairs
    sample = targets.get("fit_sample")
    if sample and sample["used"] < sample["requested"]:
        out["fit_sample"] = dict(sample)
    return out


def _pct(frac: float) -> str:
    return f"{100 * frac:.4g}%"


def findings_text(f: dict) -> list:
    top = _pct(f["top_frac"])
    share = f["top_share"]
    lines = [
        f"The top {top} of window sequences hold "
        + ("no positive influence" if share is None else f"{100 * share:.1f}% of the total positive influence")
        + " on the primary target (the paper reports about 50% for the top 10% on Pythia)."
    ]
    pl = f.get("power_law") or {}
    if "exponent" in pl:
        lines.append(f"Rank–score tail power-law exponent {pl['exponent']:.2f} (R² {pl.get('r2', float('nan')):.2f}).")
    if f.get("category_enrichment"):
        ranked = sorted(f["category_enrichment"].items(), key=lambda kv: -(kv[1] or 0))
        over = [f"{c} ×{r:.2f}" for c, r in ranked if r is not None and r > 1.0]
        under = [f"{c} ×{r:.2f}" for c, r in ranked if r is not None and r <= 1.0]
        lines.append(
            f"Over-represented in the top {top} (share / base rate): "
            + (", ".join(over) or "none")
            + "; under-represented: "
            + (", ".join(under) or "none")
            + "."
        )
    if f.get("fit_sample"):
        s = f["fit_sample"]
        lines.append(
            f"The factors were fitted on all {s['used']} window sequences; fit.n_sequences asked for {s['requested']}."
        )
    for p in f.get("overlap", []):
        lines.append(
            f"Top-set Jaccard overlap {p['a']} ({p['roles'][0]}) vs {p['b']} ({p['roles'][1]}): {p['jaccard']:.3f}."
        )
    return lines


def intervention_findings(result: dict) -> list:
    """One line per arm from ``run_interventions``' result: emergence step (per seed) against the baseline's, the
    area between its head-score curve and the baseline's, and the ICL change at the window end."""
    summ, threshold = result["summary"], result["threshold"]
    base = summ.get("baseline", {}).get("emergence", {}).get("mean")
    end = str(result["config"]["end_step"])
    lines = [
        f"Retraining from step {result['config']['start_step']} (threshold {threshold}): baseline emergence step "
        f"{'never' if base is None else f'{base:.0f}'}."
    ]
    if result["config"].get("pretrained"):
        lines.append(
            f"The arms branch from a published checkpoint without optimizer state: AdamW restarted from zero "
            f"moments at step {result['config']['start_step']} (an approximation of continuing the original "
            f"run; every arm shares it)."
        )
    short = result.get("sets", {}).get("matched_composition", {}).get("shortfall")
    if short:
        lines.append(
            f"The matched sets could not copy the top set's mix: the rest of the window lacks "
            f"{', '.join(f'{n} {c!r}' for c, n in short.items())} rows, drawn instead from the other categories."
        )
    for arm, a in summ.items():
        if arm == "baseline":
            continue
        steps = a["emergence_steps"]  # seed -> step (a list in files written before the one summary)
        steps = list(steps.values()) if isinstance(steps, dict) else list(steps)
        em = ", ".join("never" if e is None else str(e) for e in (steps[:1] if len(set(steps)) == 1 else steps))
        if len(steps) > 1 and not result["arms"].get(arm, {}).get("deterministic", False):
            em += f" ({len(steps)} seeds)" if len(set(steps)) > 1 else f" (all {len(steps)} seeds)"

        def pm(d, sign_fmt, fmt):
            if d.get("mean") is None:
                return "n/a"
            return f"{d['mean']:{sign_fmt}}" + (f" ± {d['std']:{fmt}}" if d.get("std") else "")

        lines.append(
            f"{arm}: emergence {em}; area vs baseline {pm(a['area_vs_baseline'], '+.1f', '.1f')}; "
            f"ICL change at step {end} {pm(a['icl_change'].get(end, {}), '+.3f', '.3f')}."
        )
    return lines
