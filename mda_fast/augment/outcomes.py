"""The study's derived figures: gain, emergence, area against none (the trapezoid integral of the score's difference
from none's over the evaluated steps, score x steps), ICL and held-out loss per arm and seed, and plain findings."""

from __future__ import annotations

from typing import List

import numpy as np

from .arms import SEEDED_ARMS

__all__ = ["derive", "findings"]


def _ms(v) -> dict:
    """Mean, std, count and values of ``v`` without its ``None``s."""
    v = [x for x in v if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "std": float(np.std(v)) if v else None, "n": len(v), "values": v}


def derive(size: dict, threshold: float) -> None:
    """Per arm and seed: gain, emergence, ICL, held-out loss; per arm: mean and std over seeds (in place)."""
    none = size["arms"]["none"]["seeds"]
    gstep = size["gain_step"]
    for arm, a in size["arms"].items():
        for seed, d in a["seeds"].items():
            b = none[seed]
            i = d["steps"].index(gstep)
            d["score_at_gain_step"] = d["score"][i]
            d["gain"] = (d["score"][i] - b["score"][i]) / b["score"][i] if b["score"][i] else None
            d["emergence_step"] = next((s for s, v in zip(d["steps"], d["score"]) if v >= threshold), None)
            diff = np.asarray(d["score"], np.float64) - np.asarray(b["score"], np.float64)
            st = np.asarray(d["steps"], np.float64)
            d["area_vs_none"] = float(np.sum(0.5 * (diff[1:] + diff[:-1]) * np.diff(st)))  # score x steps
            d["icl_at_gain_step"] = d["icl"][i]
            d["heldout_loss_final"] = d["heldout_loss"][-1]
            d["heldout_loss_change"] = (
                None
                if d["heldout_loss"][-1] is None or b["heldout_loss"][-1] is None
                else d["heldout_loss"][-1] - b["heldout_loss"][-1]
            )
        runs = list(a["seeds"].values())[:1] if a["deterministic"] else list(a["seeds"].values())
        a["summary"] = {
            k: _ms([d[k] for d in runs])
            for k in (
                "gain",
                "score_at_gain_step",
                "emergence_step",
                "area_vs_none",
                "icl_at_gain_step",
                "heldout_loss_final",
                "heldout_loss_change",
            )
        }


def findings(res: dict) -> List[str]:
    """Plain sentences, computed whatever the numbers are."""
    out = []
    seeded_noise = []
    for p, sz in res["sizes"].items():
        arms = sz["arms"]
        if sz["emergence_step"] is None:
            out.append(
                f"{p}: no head reached {res['threshold']} in the base run; gains are measured at step "
                f"{sz['gain_step']} anyway."
            )
        g = {a: arms[a]["summary"]["gain"] for a in arms}
        txt = ", ".join(
            f"{a} {100 * v['mean']:+.1f}% ± {100 * v['std']:.1f}"
            for a, v in g.items()
            if v["mean"] is not None and a != "none"
        )
        out.append(f"{p} (gain at step {sz['gain_step']}): {txt}.")
        if "mechanistic" in g and g["mechanistic"]["mean"] is not None:
            m = g["mechanistic"]
            speed = m["mean"] > m["std"]
            txt = f"the mechanistic data {'sped' if speed else 'did not speed'} the head up beyond seed spread"
            txt += f" ({100 * m['mean']:+.1f}% ± {100 * m['std']:.1f} over none)"
            if "random" in g and g["random"]["mean"] is not None:
                r = g["random"]
                beat = m["mean"] > r["mean"] + max(m["std"], r["std"])
                txt += f" and {'beat' if beat else 'did not beat'} random beyond seed spread ({100 * r['mean']:+.1f}%)"
            out.append(f"{p}: {txt}.")
        if "mechanistic" in g and "copy" in g and g["mechanistic"]["mean"] is not None:
            m, c = g["mechanistic"], g["copy"]
            if m["mean"] > c["mean"] + max(m["std"], c["std"]):
                out.append(f"{p}: the mechanistic data beat the generic copy baseline beyond seed spread.")
            elif m["mean"] > c["mean"]:
                out.append(
                    f"{p}: the mechanistic data did not beat the copy baseline beyond seed spread "
                    f"({100 * m['mean']:+.1f}% vs {100 * c['mean']:+.1f}%)."
                )
            else:
                out.append(
                    f"{p}: the mechanistic data did NOT beat the generic copy baseline "
                    f"({100 * m['mean']:+.1f}% vs {100 * c['mean']:+.1f}%)."
                )
        for a in arms:
            if a in SEEDED_ARMS and arms[a]["summary"]["heldout_loss_final"]["std"] is not None:
                seeded_noise.append(arms[a]["summary"]["heldout_loss_final"]["std"])
        hl = {a: arms[a]["summary"]["heldout_loss_change"]["mean"] for a in arms if a != "none"}
        noise = max([arms[a]["summary"]["heldout_loss_final"]["std"] or 0 for a in arms] + [1e-9])
        worse = [a for a, v in hl.items() if v is not None and v > 2 * noise]
        out.append(
            f"{p}: held-out prose loss change vs none: "
            + ", ".join(f"{a} {v:+.4f}" for a, v in hl.items() if v is not None)
            + f" (seed spread up to {noise:.4f}); "
            + (f"worse beyond 2x seed spread: {', '.join(worse)}." if worse else "none worse beyond 2x seed spread.")
        )
        if "mechanistic-large" in g and g["mechanistic-large"]["mean"] is not None:
            s, l = g["mechanistic"]["mean"], g["mechanistic-large"]["mean"]
            out.append(
                f"{p}: motifs mined on the smallest model gave {100 * s:+.1f}%, motifs mined on {p} itself "
                f"{100 * l:+.1f}% ("
                + ("the transfer claim holds here" if s > l else "the transfer claim does not hold here")
                + ")."
            )
    return out + prediction_findings(res)


#: the compared sets that are an arm's rows (``compare`` names -> arm)
_SET_ARM = {"random": "random", "copy": "copy", "top": "top", "mechanistic": "mechanistic"}


def prediction_findings(res: dict) -> List[str]:
    """Per MDA target: do the MDA scores of the rows each arm inserts (``comparison.influence``, smallest size) order
    that size's arms as their gains at E do? (Kendall's tau over the arms; the random set stands for the random
    arm's rows.)"""
    inf = (res.get("comparison") or {}).get("influence") or {}
    if not inf or not res.get("sizes"):
        return []
    p = next(iter(res["sizes"]))
    g = {a: v["summary"]["gain"]["mean"] for a, v in res["sizes"][p]["arms"].items()}
    arms = [s for s, a in _SET_ARM.items() if s in inf["sets"] and g.get(a) is not None]
    out = []
    for t in inf["targets"]:
        sc = {s: inf["sets"][s][t]["score"]["mean"] for s in arms}
        pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1 :]]
        agree = sum(1 if (sc[a] - sc[b]) * (g[_SET_ARM[a]] - g[_SET_ARM[b]]) > 0 else -1 for a, b in pairs)
        tau = agree / max(len(pairs), 1)
        by_score = ", ".join(f"{s} {sc[s]:.4g}" for s in sorted(arms, key=lambda s: -sc[s]))
        by_gain = ", ".join(f"{s} {100 * g[_SET_ARM[s]]:+.1f}%" for s in sorted(arms, key=lambda s: -g[_SET_ARM[s]]))
        out.append(
            f"{p}: MDA's score ({t}) of the rows each arm inserts, highest first: {by_score}; the arms' gains at E: "
            f"{by_gain} (Kendall's tau {tau:+.2f} over {len(arms)} arms)."
        )
    return out
