"""``mda-fast report``: the self-contained ``out/report.html`` from what ``out`` holds (an analysis at least)."""

from __future__ import annotations

import datetime
import os

from ..config import Config
from ..errors import ConfigError
from ..io import read_json
from ..study.findings import findings, findings_text
from .inputs import checkpoint_ref, device_of


def provenance(cfg: Config) -> dict:
    from ..version import environment

    try:
        from ..kernels import available_backends

        backends = available_backends()
    except Exception as e:  # noqa: BLE001
        backends = f"unavailable ({e})"
    try:
        ckpt = "@".join(x for x in checkpoint_ref(cfg) if x)
    except ConfigError:
        ckpt = "n/a"
    return {
        **environment(),
        "device": str(device_of(cfg)),
        "kernel backends": backends,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "checkpoint": ckpt,
    }


def run_report(cfg: Config, out: str, interventions: dict | None = None, notes=None) -> str:
    from ..study.report import write_report
    from ..study.tables import read_table_csv

    a_path = os.path.join(out, "analyze", "analysis.json")
    analysis = read_json(a_path, "nothing has been analysed; run `mda-fast analyze` first")
    loc_path = os.path.join(out, "localize", "localize.json")
    emergence = read_json(loc_path) if os.path.exists(loc_path) else None
    t_path = os.path.join(out, "targets.json")
    targets = read_json(t_path) if os.path.exists(t_path) else None
    if emergence is not None and targets is not None:
        emergence["heads"] = [[h["layer"], h["head"]] for h in targets["heads"]]
    top_path = os.path.join(out, "analyze", "top.csv")
    top = read_table_csv(top_path) if os.path.exists(top_path) else None
    i_path = os.path.join(out, "interventions", "interventions.json")
    if interventions is None and os.path.exists(i_path):
        interventions = read_json(i_path)
    if notes is None and targets is not None:
        notes = findings_text(findings(analysis, targets))
    path = os.path.join(out, "report.html")
    per_token = per_token_rows(cfg, out)
    return write_report(
        path,
        title=cfg.report.title,
        config=cfg.to_dict(),
        provenance=provenance(cfg),
        emergence=emergence,
        analysis=analysis,
        top_samples=top,
        interventions=interventions,
        notes=notes,
        per_token=per_token,
        eod_marker="<|eod|>" if cfg.data.tokenizer == "bytes" else "<|endoftext|>",
    )


def per_token_rows(cfg: Config, out: str, n_rows: int = 3) -> dict | None:
    """The top ``n_rows`` rows of each target from ``out/per_token/`` for the report, with a per-token decoder
    (``None`` without per-token results or without the tokenizer)."""
    import logging

    from ..data import get_decoder
    from .per_token import PER_TOKEN_DIR, load_target

    s_path = os.path.join(out, PER_TOKEN_DIR, "summary.json")
    if not os.path.exists(s_path):
        return None
    summary = read_json(s_path)
    try:
        decode = get_decoder(cfg.data.tokenizer)
    except Exception as e:  # noqa: BLE001 - the hub may be unreachable: the report goes on without the section
        logging.getLogger(__name__).info(f"[report] no per-token text: tokenizer unavailable ({type(e).__name__})")
        return None
    targets = {}
    for name, path in summary.get("files", {}).items():
        a = load_target(path)
        top = [i for i in range(len(a["side"])) if a["side"][i] == 0][:n_rows]
        targets[name] = [
            {k: a[k][i] for k in ("tokens", "loss_token", "position", "score", "rank", "global_index")} for i in top
        ]
    return {"targets": targets, "summary": summary, "decode_token": lambda t: decode([t])}
