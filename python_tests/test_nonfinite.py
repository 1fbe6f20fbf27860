"""NaN / inf guards: check_finite, fit_ekfac, Factors.load, InfluenceScorer and localize stop with a one-line
error naming where the non-finite values are, and finite inputs pass through unchanged."""

import json
import os
from dataclasses import dataclass

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file, save_file

from mda_fast import Factors, HeadSpec, InfluenceScorer, NonFiniteError, StateError, fit_ekfac, localize
from mda_fast.core.finite import check_finite
from mda_fast.core.probes import PrefixMatchingProbe

torch.set_num_threads(1)
BAD = {"nan": float("nan"), "inf": float("inf")}
PK = dict(L=6, n=4, seed=0)
SPEC = HeadSpec(1, 0, "qk")


def rows_(seed=0, n=8, T=11, vocab=64):
    return torch.randint(0, vocab, (n, T), generator=torch.Generator().manual_seed(seed))


def one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- check_finite ---------------------------------------------------------------------------------------------
def test_check_finite_names_tensors_counts_and_rows():
    x = torch.randn(6, 3, dtype=torch.float64)
    before = x.clone()
    check_finite(x, "x")
    check_finite({"a": x, "ids": torch.arange(4)}, "xs")  # integer tensors always pass
    assert torch.equal(x, before)
    x[2, 1], x[4, 0], x[4, 2] = float("nan"), float("inf"), -float("inf")
    with pytest.raises(NonFiniteError) as e:
        check_finite(x, "the scores", expected="finite scores", rows=[10, 11, 12, 13, 14, 15])
    assert one_line(e) == "non-finite values in the scores: rows 12, 14 (1 NaN, 2 inf of 18); expected finite scores"
    with pytest.raises(NonFiniteError) as e:
        check_finite([("w.ok", torch.ones(3)), ("w.bad", x)], "the weights", cause="it diverged")
    assert one_line(e) == "non-finite values in the weights: w.bad (1 NaN, 2 inf); expected finite values; it diverged"
    with pytest.raises(NonFiniteError, match=r"^non-finite values in s: \(1 NaN, 0 inf of 1\)"):
        check_finite(torch.tensor(float("nan")), "s")


# ---- fit_ekfac ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_fit_refuses_non_finite_weights_before_any_work(kind, monkeypatch):
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float32)
    with torch.no_grad():
        model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight[3, 5] = BAD[kind]
    import mda_fast.core.ekfac as ekfac

    monkeypatch.setattr(ekfac, "capture", lambda *a, **k: pytest.fail("fit_ekfac ran a pass on NaN weights"))
    with pytest.raises(NonFiniteError) as e:
        fit_ekfac(model, [SPEC], [rows_()], progress=False)
    counts = "1 NaN, 0 inf" if kind == "nan" else "0 NaN, 1 inf"
    assert one_line(e) == (
        "non-finite values in the model's parameters: gpt_neox.layers.0.mlp.dense_h_to_4h.weight "
        f"({counts}); expected finite weights; the checkpoint is damaged or its training diverged"
    )


@pytest.mark.parametrize(
    "kernel,factor", [("covariance_accumulate", "A"), ("covariance_accumulate", "S"), ("eigen_sq_accumulate", "Λ")]
)
def test_fit_names_the_non_finite_factor_before_eigh(kernel, factor, monkeypatch):
    """A, S or Λ turning non-finite (an overflow) is reported by block and factor, never as a LinAlgError."""
    import mda_fast.core.ekfac as ekfac

    model = make_tiny(n_layers=2, d_model=16, n_heads=2)
    real = getattr(ekfac.kernels, kernel)
    calls = []

    def poisoned(out, *args, **kwargs):
        real(out, *args, **kwargs)
        calls.append(out)
        # the covariance kernel is called A, S, A, S ... per block; poison the requested one in the first batch
        if kernel == "eigen_sq_accumulate" or len(calls) == (1 if factor == "A" else 2):
            out[0, 0] = float("nan")

    monkeypatch.setattr(ekfac.kernels, kernel, poisoned)
    with pytest.raises(NonFiniteError) as e:
        fit_ekfac(model, [SPEC], [rows_()], fisher="empirical", progress=False)
    where = "EK-FAC eigenvalues" if factor == "Λ" else "EK-FAC covariances"
    assert one_line(e).startswith(f"non-finite values in the {where}: {factor} of L1H0.qk.qk (1 NaN, 0 inf)")


def test_fit_turns_a_linalg_error_into_a_named_error(monkeypatch):
    model = make_tiny(n_layers=2, d_model=16, n_heads=2)

    def fail(M):
        raise torch.linalg.LinAlgError(
            "linalg.eigh: The algorithm failed to converge because the input matrix is "
            "ill-conditioned or has too many repeated eigenvalues (error code: 3)."
        )

    monkeypatch.setattr(torch.linalg, "eigh", fail)
    with pytest.raises(NonFiniteError) as e:
        fit_ekfac(model, [SPEC], [rows_()], fisher="empirical", progress=False)
    assert one_line(e).startswith("the eigendecomposition of A of L1H0.qk.qk ([16, 16], float64) failed: linalg.eigh")


# ---- InfluenceScorer ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float32)
    return model, fit_ekfac(model, [SPEC], [rows_(1, n=16)], fisher="empirical", progress=False)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_scorer_refuses_non_finite_weights_at_construction(fitted, kind):
    model, fac = fitted
    w = model.gpt_neox.layers[1].attention.query_key_value.weight
    saved = w[0, 0].clone()
    with torch.no_grad():
        w[0, 0] = BAD[kind]
    try:
        with pytest.raises(NonFiniteError) as e:
            InfluenceScorer(model, [SPEC], fac, probe_kwargs=PK)
    finally:
        with torch.no_grad():
            w[0, 0] = saved
    assert one_line(e).startswith(
        "non-finite values in the model's parameters: "
        f"gpt_neox.layers.1.attention.query_key_value.weight ({int(kind == 'nan')} NaN, "
        f"{int(kind == 'inf')} inf)"
    )


@dataclass
class NaNProbe(PrefixMatchingProbe):
    """sqrt of a negative number: a NaN objective with NaN gradients on a finite model."""

    name = "nan_probe"

    def objective(self, model, spec, input_ids, logits, hooks):
        return torch.sqrt(super().objective(model, spec, input_ids, logits, hooks) - 10.0)


def test_scorer_names_the_probe_with_non_finite_gradients(fitted):
    model, fac = fitted
    with pytest.raises(NonFiniteError) as e:
        InfluenceScorer(model, [SPEC], fac, probe=NaNProbe(**PK))
    msg = one_line(e)
    assert msg.startswith("non-finite values in the gradient of probe 'nan_probe' for L1H0.qk: L1H0.qk.qk (")
    assert "expected finite probe gradients" in msg and "probe value nan" in msg


def test_scorer_names_non_finite_preconditioned_gradients(fitted):
    model, fac = fitted
    f = fac.blocks["L1H0.qk.qk"]
    zero = Factors(
        fac.method,
        fac.fisher,
        fac.specs,
        fac.block_info,
        {"L1H0.qk.qk": type(f)(f.Q_A, f.Q_S, f.lam_A, f.lam_S, torch.zeros_like(f.eig), 0.0)},
        fac.meta,
    )
    with pytest.raises(
        NonFiniteError,
        match=r"^non-finite values in the preconditioned gradient -H⁻¹∇f of "
        r"L1H0\.qk:induction: L1H0\.qk\.qk \(",
    ):
        InfluenceScorer(model, [SPEC], zero, probe_kwargs=PK)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_score_names_the_rows_with_non_finite_scores(fitted, kind):
    """Weights that go bad after construction (one embedding row) give non-finite scores exactly for the
    sequences holding that token; score raises naming those rows and returns nothing."""
    model, fac = fitted
    scorer = InfluenceScorer(model, [SPEC], fac, probe_kwargs=PK)
    rows = rows_(2, n=8)
    rows[rows == 7] = 8
    rows[2, 4] = rows[5, 0] = 7
    emb = model.gpt_neox.embed_in.weight
    saved = emb[7].clone()
    with torch.no_grad():
        emb[7, 1] = BAD[kind]
    try:
        with pytest.raises(NonFiniteError) as e:
            scorer.score(rows, rows=list(range(100, 108)))
        with pytest.raises(
            NonFiniteError, match=r"^non-finite values in the influence scores of this batch: rows 2, 5 "
        ):
            scorer.score(rows)
    finally:
        with torch.no_grad():
            emb[7] = saved
    assert one_line(e).startswith("non-finite values in the influence scores: rows 102, 105 (")
    with pytest.raises(ValueError, match="rows must label the 8 sequences"):
        scorer.score(rows, rows=[1, 2])


def test_checks_leave_finite_scores_bit_identical(fitted, monkeypatch):
    import mda_fast.core.finite as finite
    import mda_fast.core.influence as influence

    model, fac = fitted
    rows = rows_(3, n=6)
    checked = InfluenceScorer(model, [SPEC], fac, probe_kwargs=PK).score(rows, rows=list(range(6)))
    off = lambda *a, **k: None
    monkeypatch.setattr(influence, "check_finite", off)
    monkeypatch.setattr(influence, "check_model_finite", off)
    monkeypatch.setattr(finite, "check_finite", off)
    plain = InfluenceScorer(model, [SPEC], fac, probe_kwargs=PK).score(rows)
    assert torch.isfinite(checked).all() and torch.equal(checked, plain)


def test_localize_refuses_non_finite_weights():
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float32)
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[4, 0] = float("nan")
    with pytest.raises(
        NonFiniteError, match=r"^non-finite values in the model's parameters: gpt_neox\.embed_in\.weight"
    ):
        localize(model, seq_len=8, n=4)


# ---- Factors.load ---------------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, fitted):
    d = tmp_path / "factors"
    fitted[1].save(str(d))
    return d, d / "factors.json", d / "factors.safetensors"


def _load_err(d, cls=StateError) -> str:
    with pytest.raises(cls) as e:
        Factors.load(str(d))
    return one_line(e)


def test_load_round_trip_is_exact(saved, fitted):
    back = Factors.load(str(saved[0]))
    for n, f in fitted[1].blocks.items():
        assert torch.equal(back.blocks[n].Q_A, f.Q_A) and torch.equal(back.blocks[n].eig, f.eig)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_load_damaged_safetensors(saved, damage):
    d, _, t = saved
    data = t.read_bytes()
    t.write_bytes({"truncate": data[: len(data) - 50], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    msg = _load_err(d)
    assert msg.startswith(f"{t} is damaged or truncated (") and "re-run `mda-fast fit`" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing_key", "bad_value"])
def test_load_damaged_json(saved, damage):
    d, j, _ = saved
    text = j.read_text()
    meta = json.loads(text)
    if damage == "truncate":
        j.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        j.write_bytes(b"\xff\xfe\x00garbage")
    elif damage == "missing_key":
        del meta["damping"]
        j.write_text(json.dumps(meta))
    else:
        meta["damping"]["L1H0.qk.qk"] = "lots"
        j.write_text(json.dumps(meta))
    msg = _load_err(d)
    assert msg.startswith(str(j)) and "re-run `mda-fast fit`" in msg
    if damage == "missing_key":
        assert "'damping'" in msg


def test_load_missing_files_and_tensors(saved):
    d, j, t = saved
    tensors = load_file(str(t))
    del tensors["L1H0.qk.qk/eig"]
    save_file(tensors, str(t))
    assert _load_err(d).startswith(f"{t} has no tensor L1H0.qk.qk/eig (listed in factors.json)")
    os.remove(t)
    assert _load_err(d).startswith(f"no saved factors at {str(d)!r}: missing factors.safetensors")


def test_load_shape_mismatch_with_json(saved):
    d, j, t = saved
    meta = json.loads(j.read_text())
    meta["blocks"]["L1H0.qk.qk"]["segments"][-1]["out_stop"] += 1  # the JSON now says d_out is one larger
    j.write_text(json.dumps(meta))
    msg = _load_err(d)
    assert msg.startswith(
        f"{t}: L1H0.qk.qk/Q_S is torch.float64 [16, 16], but factors.json needs a float tensor [17, 17]"
    )


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_load_non_finite_factors(saved, kind):
    d, _, t = saved
    tensors = load_file(str(t))
    tensors["L1H0.qk.qk/lam_S"][3] = BAD[kind]
    save_file(tensors, str(t))
    msg = _load_err(d, NonFiniteError)
    assert msg.startswith(f"non-finite values in the factors in {t}: L1H0.qk.qk/lam_S ({int(kind == 'nan')} NaN")
    assert "re-run `mda-fast fit`" in msg
