"""Influence scores of training sequences on a probe, restricted to head subspaces.

    I(z) = −Σ_blocks ⟨∇_b L(z), H_b⁻¹ ∇_b f_probe⟩

``L(z)`` is the summed token cross-entropy of training sequence z and ``f_probe`` the probe measurement.
Sign: a positive score means that up-weighting z (training on it more) increases f, i.e. z pushes the unit
into existence (first-order influence function: dθ/dε = −H⁻¹∇L(z), so df/dε = −∇fᵀH⁻¹∇L(z)).

The preconditioned probe gradients are computed once; scoring a batch is one forward + backward pass over all
tracked blocks and one fused kernel call (``kernels.score_blocks``) that never materialises ∇L(z).
"""

from __future__ import annotations

import contextlib

import torch

from .. import kernels
from .capture import capture, check_mask, loss_objective, resolve_blocks, split_rows
from .ekfac import Factors
from .finite import check_finite, check_model_finite
from .per_token import loss_token_scores, position_scores, weight_tangents
from .probes import get_probe


@contextlib.contextmanager
def tf32_matmuls(enabled: bool):
    """Let float32 matmuls use TF32 tensor cores (``torch.set_float32_matmul_precision("high")``) inside the
    block; the previous setting is restored afterwards. TF32 keeps 10 mantissa bits: relative errors near 3e-4."""
    if not enabled:
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class InfluenceScorer:
    """Score training sequences for every (spec, probe) target in one pass.

    Targets are ordered spec-major: ``target_names[i] = f"{spec.name}:{probe.name}"``. With ``tf32=True`` the
    training-sequence passes of a float32 model on a GPU use TF32 tensor cores (the probe gradients stay exact).
    With ``compile=True`` the training-sequence passes run the lean forward's ``torch.compile``d pieces (opt-in:
    equal to the eager scores up to fp rounding; the first batch pays the compilation).
    """

    def __init__(
        self,
        model,
        specs,
        factors: Factors,
        probe="induction",
        probe_kwargs: dict | None = None,
        backend: str | None = None,
        progress: bool = False,
        tf32: bool = False,
        compile: bool = False,
    ):
        if not isinstance(factors, Factors):
            raise TypeError(
                f"factors must be a mda_fast.Factors (from fit_ekfac or Factors.load), got {type(factors).__name__}"
            )
        self.model, self.backend, self.tf32, self.compile = model, backend, bool(tf32), bool(compile)
        self.specs, blocks_per_spec = resolve_blocks(model, specs)
        factors.check(model, self.specs)
        check_model_finite(model)
        self.factors = factors
        probes = probe if isinstance(probe, (list, tuple)) else [probe]
        self.probes = [get_probe(p, **(probe_kwargs or {})) if isinstance(p, str) else get_probe(p) for p in probes]
        self.targets = [(s, p) for s in self.specs for p in self.probes]
        self.target_names = [f"{s.name}:{p.name}" for s, p in self.targets]
        self.blocks = {}
        for bs in blocks_per_spec:
            for b in bs:
                self.blocks.setdefault(b.name, b)
        self.probe_values: dict[str, float] = {}
        self.queries = self._build_queries(blocks_per_spec)

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def probe_gradients(self, probe, spec_index: list[int], blocks_per_spec) -> dict:
        """∇f_probe for each listed spec: {spec_i: {block_name: [d_out, D_in]}} (summed over the probe batch)."""
        model = self.model
        ids = probe.inputs(model)
        out = {}
        groups = [spec_index] if not probe.per_head else [[i] for i in spec_index]
        for group in groups:
            blocks = list({b.name: b for i in group for b in blocks_per_spec[i]}.values())
            spec = self.specs[group[0]]
            layers = sorted({l for i in group for l in probe.layers(self.specs[i])})
            res = capture(
                model,
                ids,
                blocks,
                lambda logits, hooks, spec=spec: probe.objective(model, spec, ids, logits, hooks),
                qkv_layers=layers,
            )
            value = float(res.value.sum())
            for i in group:
                self.probe_values[f"{self.specs[i].name}:{probe.name}"] = value
                grads = {}
                for b in blocks_per_spec[i]:
                    x, y = res.x(b), res.y(b)
                    g = torch.einsum("nto,nti->oi", y.double(), x.double())
                    if b.bias:
                        g = torch.cat([g, y.double().sum(dim=(0, 1))[:, None]], dim=1)
                    grads[b.name] = g
                check_finite(
                    grads,
                    f"the gradient of probe {probe.name!r} for {self.specs[i].name}",
                    expected="finite probe gradients",
                    cause="the probe objective is not finite on this model (probe value "
                    f"{value:.6g}; check probe_kwargs)",
                )
                out[i] = grads
        return out

    def _build_queries(self, blocks_per_spec) -> dict:
        """P_b [K, d_out, D_in] = −H_b⁻¹ ∇_b f for the targets that own block b, zero elsewhere."""
        K = self.n_targets
        dt = torch.float64 if next(self.model.parameters()).dtype == torch.float64 else torch.float32
        P = {n: torch.zeros(K, b.d_out, b.d_in_total, dtype=dt) for n, b in self.blocks.items()}
        for pj, probe in enumerate(self.probes):
            grads = self.probe_gradients(probe, list(range(len(self.specs))), blocks_per_spec)
            for si, bgrads in grads.items():
                k = si * len(self.probes) + pj
                for name, g in bgrads.items():
                    P[name][k] = -self.factors.precondition(name, g).to(dt)
                check_finite(
                    {name: P[name][k] for name in bgrads},
                    f"the preconditioned gradient -H⁻¹∇f of {self.target_names[k]}",
                    expected="finite values",
                    cause="the factors' eigenvalues plus damping are zero somewhere (refit with damping > 0)",
                )
        device = next(self.model.parameters()).device
        return {n: p.to(device).contiguous() for n, p in P.items()}

    def score(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        return_loss: bool = False,
        rows=None,
    ):
        """Scores ``[N, n_targets]`` (float32; float64 for a float64 model) of training sequences.

        ``input_ids`` are rows of T+1 tokens (Pythia convention) unless ``labels`` are given. With
        ``return_loss=True`` also returns each sequence's summed training loss ``[N]``. ``rows`` (N labels, e.g.
        the sequences' dataset indices) only names the offending sequences when a score is not finite, which
        raises ``NonFiniteError``.
        """
        inputs, labels, mask, blocks, res, scores = self._capture_and_score(input_ids, labels, mask)
        if rows is not None and len(rows) != scores.shape[0]:
            raise ValueError(f"rows must label the {scores.shape[0]} sequences of the batch, got {len(rows)} labels")
        check_finite(
            scores,
            "the influence scores of this batch" if rows is None else "the influence scores",
            expected="finite scores",
            cause="the training loss or its gradient overflows on these "
            "sequences (a float16/bfloat16 model? use float32)",
            rows=rows,
        )
        return (scores, res.value) if return_loss else scores

    def _capture_and_score(self, input_ids, labels, mask):
        """One capture pass of the rows and their scores: ``(inputs, labels, mask, blocks, capture result, S)``."""
        inputs, labels = split_rows(input_ids, labels)
        mask = check_mask(mask, labels.shape)
        blocks = list(self.blocks.values())
        with tf32_matmuls(self.tf32 and inputs.device.type == "cuda"):
            res = capture(self.model, inputs, blocks, loss_objective(labels, mask), compile=self.compile)
        parts = [kernels.BlockInput(res.x(b), res.y(b), self.queries[b.name], b.bias) for b in blocks]
        return inputs, labels, mask, blocks, res, kernels.score_blocks(parts, mask=None, backend=self.backend)

    def per_token(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        targets=None,
    ) -> dict:
        """Both per-token decompositions of the rows' scores (``mda_fast.core.per_token``), for every target.

        Returns ``{target_name: {"position": [N, T], "loss_token": [N, T], "score": [N]}}``: ``position[n, t]``
        is the part of row n's score carried by the head's computation at position t, ``loss_token[n, t]`` the
        part carried by the prediction of ``labels[n, t]`` (zero where ``mask`` is zero); each sums over t to
        ``score`` (this scorer's backend, the value :meth:`score` returns). Accumulated in float64, returned in
        the scores' dtype (float32; float64 for a float64 model). One capture pass for the scores and the
        positions, then one forward-mode pass per target for the loss tokens. ``targets`` (names from
        ``target_names``; default all) limits the result, and the forward-mode passes, to those targets.
        """
        names = self.target_names if targets is None else list(targets)
        unknown = [n for n in names if n not in self.target_names]
        if unknown:
            raise ValueError(f"unknown targets {unknown}; expected names from {self.target_names}")
        inputs, labels, mask, blocks, res, scores = self._capture_and_score(input_ids, labels, mask)
        pos = sum(position_scores(res.x(b), res.y(b), self.queries[b.name], b.bias) for b in blocks)
        del res
        out = {}
        for name in names:
            k = self.target_names.index(name)
            lt = loss_token_scores(
                self.model, inputs, labels, mask, weight_tangents(self.model, blocks, self.queries, k)
            )
            out[name] = {
                "position": pos[..., k].to(scores.dtype),
                "loss_token": lt.to(scores.dtype),
                "score": scores[:, k],
            }
            check_finite(
                {"position": out[name]["position"], "loss_token": out[name]["loss_token"]},
                f"the per-token influence of {name}",
                expected="finite values",
                cause="the training loss or its derivative overflows on these sequences",
            )
        return out
