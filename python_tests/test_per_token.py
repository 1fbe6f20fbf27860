"""Per-token influence (``InfluenceScorer.per_token``): both decompositions sum to the row's score, each term
is checked against an independent computation, masked tokens, every kernel backend, and a trained induction head
whose loss-token influence sits where induction predicts (positions shifted by one fail that check)."""

from __future__ import annotations

import os

import pytest
import test_kernels_reference  # noqa: F401  (TRITON_INTERPRET=1 without a GPU, before triton is imported)
import torch
from conftest import make_tiny

from mda_fast import HeadSpec, InfluenceScorer, fit_ekfac
from mda_fast.core.capture import sequence_loss, split_rows
from mda_fast.core.heads import module_of
from mda_fast.core.per_token import loss_token_scores, weight_tangents
from mda_fast.kernels import available_backends

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "induction_tiny")
SPECS = [HeadSpec(1, 2), HeadSpec(2, 0, "qk", bias=True), HeadSpec(0, 3, bias=True)]


def _scorer(model, specs=SPECS, probes=("induction", "prev_token"), backend="torch", seed=0):
    g = torch.Generator().manual_seed(seed)
    fit = [torch.randint(0, model.config.vocab_size, (6, 25), generator=g)]
    factors = fit_ekfac(model, specs, fit, progress=False)
    return InfluenceScorer(model, specs, factors, probe=list(probes), probe_kwargs={"L": 8}, backend=backend)


def _rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.fixture(scope="module")
def f64():
    model = make_tiny(n_layers=3, attn="sdpa", dtype=torch.float64)
    rows = torch.randint(0, 64, (3, 21), generator=torch.Generator().manual_seed(5))
    return model, _scorer(model), rows


def test_both_decompositions_sum_to_the_score_float64(f64):
    model, scorer, rows = f64
    score = scorer.score(rows)
    out = scorer.per_token(rows)
    assert list(out) == scorer.target_names
    for k, name in enumerate(scorer.target_names):
        d = out[name]
        assert d["position"].shape == d["loss_token"].shape == (3, 20)
        assert d["position"].dtype == d["loss_token"].dtype == torch.float64
        assert torch.equal(d["score"], score[:, k])
        for part in ("position", "loss_token"):
            assert _rel(d[part].sum(1), score[:, k]) < 1e-10, (name, part)
        # the terms are not trivially concentrated: several positions carry a share
        assert (d["loss_token"].abs() > 1e-3 * d["loss_token"].abs().max()).sum() > 10


def test_loss_token_terms_equal_one_hot_masked_scores(f64):
    """ℓ_t is the score of the row with the loss kept at token t only (capture + kernel path, no jvp)."""
    model, scorer, rows = f64
    out = scorer.per_token(rows)
    T = rows.shape[1] - 1
    for t in (0, 1, 7, T - 1):
        mask = torch.zeros(rows.shape[0], T, dtype=torch.float64)
        mask[:, t] = 1
        s = scorer.score(rows, mask=mask)
        for k, name in enumerate(scorer.target_names):
            lt = out[name]["loss_token"]
            assert float((lt[:, t] - s[:, k]).abs().max()) < 1e-10 * float(lt.abs().max()), (name, t)


def test_position_terms_equal_a_weight_perturbation_at_one_position(f64):
    """s_t = d/dε L(θ) when the blocks' weights move by ε·P at position t only (a hook on the module output;
    independent of the captured X, Y)."""
    model, scorer, rows = f64
    out = scorer.per_token(rows)
    inputs, labels = split_rows(rows)
    blocks = list(scorer.blocks.values())
    for k, name in enumerate(scorer.target_names):
        tangents = weight_tangents(model, blocks, scorer.queries, k)
        mods = {(b.layer, m) for b in blocks if scorer.queries[b.name][k].any() for m in b.modules}
        for t in (0, 5, 19):
            eps = torch.zeros((), dtype=torch.float64, requires_grad=True)

            def hook(mod, args, o, t=t):
                dw = tangents.get(mod.weight, torch.zeros_like(mod.weight))
                delta = args[0][:, t] @ dw.T
                if mod.bias is not None and mod.bias in tangents:
                    delta = delta + tangents[mod.bias]
                o = o.clone()
                o[:, t] = o[:, t] + eps * delta
                return o

            hs = [module_of(model, L, m).register_forward_hook(hook) for L, m in mods]
            try:
                with torch.enable_grad():
                    loss = sequence_loss(model(input_ids=inputs).logits, labels)
                    want = torch.stack([torch.autograd.grad(loss[n], eps, retain_graph=True)[0] for n in range(3)])
            finally:
                for h in hs:
                    h.remove()
            got = out[name]["position"][:, t]
            assert float((got - want).abs().max()) < 1e-10 * float(out[name]["position"].abs().max()), (name, t)


def test_masked_loss_token_is_zero_and_sums_still_hold(f64):
    model, scorer, rows = f64
    T = rows.shape[1] - 1
    mask = torch.ones(3, T, dtype=torch.float64)
    mask[0, 4] = 0
    mask[2, T - 1] = 0
    mask[1, :3] = 0.5
    score = scorer.score(rows, mask=mask)
    out = scorer.per_token(rows, mask=mask)
    full = scorer.per_token(rows)
    for k, name in enumerate(scorer.target_names):
        lt = out[name]["loss_token"]
        assert float(lt[0, 4]) == 0.0 and float(lt[2, T - 1]) == 0.0
        assert float(full[name]["loss_token"][0, 4].abs()) > 0  # not zero without the mask
        assert _rel(lt[1, :3], 0.5 * full[name]["loss_token"][1, :3]) < 1e-12
        for part in ("position", "loss_token"):
            assert _rel(out[name][part].sum(1), score[:, k]) < 1e-10, (name, part)


def test_eager_attention_agrees_within_its_float32_softmax():
    """HF's eager attention takes its softmax in float32 even in a float64 model; the forward-mode and the
    backward pass then agree to about 1e-5 instead of 1e-10 (sdpa models are exact, above)."""
    model = make_tiny(n_layers=3, attn="eager", dtype=torch.float64)
    scorer = _scorer(model, specs=[HeadSpec(1, 2)])
    rows = torch.randint(0, 64, (2, 21), generator=torch.Generator().manual_seed(6))
    score = scorer.score(rows)
    out = scorer.per_token(rows)
    for k, name in enumerate(scorer.target_names):
        assert _rel(out[name]["position"].sum(1), score[:, k]) < 1e-10
        assert _rel(out[name]["loss_token"].sum(1), score[:, k]) < 1e-3


@pytest.mark.parametrize("backend", ["torch", "cpu", "triton"])
def test_sums_match_each_backends_float32_score(backend):
    """float32 model: the decompositions (accumulated in float64) sum to the score each kernel backend returns,
    to float32 rounding (float64 inputs run on the torch backend only)."""
    if backend not in available_backends("cpu"):
        pytest.skip(f"backend {backend!r} is not available here")
    model = make_tiny(n_layers=3, attn="sdpa", dtype=torch.float32)
    scorer = _scorer(model, backend=backend)
    rows = torch.randint(0, 64, (3, 21), generator=torch.Generator().manual_seed(7))
    score = scorer.score(rows)
    out = scorer.per_token(rows)
    for k, name in enumerate(scorer.target_names):
        d = out[name]
        assert d["position"].dtype == d["loss_token"].dtype == torch.float32
        assert torch.equal(d["score"], score[:, k])
        for part in ("position", "loss_token"):
            scale = float(d[part].abs().sum(1).max())
            assert float((d[part].double().sum(1) - score[:, k].double()).abs().max()) < 2e-5 * scale, (name, part)


def test_bad_input():
    model = make_tiny(n_layers=2, attn="sdpa")
    scorer = _scorer(model, specs=[HeadSpec(1, 0)], probes=("induction",))
    with pytest.raises(ValueError, match="mask must have shape"):
        scorer.per_token(torch.zeros(2, 9, dtype=torch.long), mask=torch.ones(2, 9))
    with pytest.raises(TypeError, match="integer token ids"):
        scorer.per_token(torch.zeros(2, 9))


# ---- a trained induction head: exact alignment ------------------------------------------------------------


def _aligned(lt: torch.Tensor, lt_changed: torch.Tensor, j: int, masked: torch.Tensor, t: int) -> bool:
    """Two exact facts of the loss-token index t (the prediction of row token t+1 from tokens ≤ t):
    changing row token j leaves ℓ_s unchanged for s < j-1 and changes ℓ_{j-1} (its label); ℓ_t equals the score
    of the row with the loss kept at token t only."""
    before = bool((lt[:, : j - 1] - lt_changed[:, : j - 1]).abs().max() < 1e-12 * lt.abs().max())
    at = bool(((lt[:, j - 1] - lt_changed[:, j - 1]).abs() > 1e-6 * lt.abs().max()).all())
    same = bool((lt[:, t] - masked).abs().max() < 1e-10 * lt.abs().max())
    return before and at and same


@pytest.fixture(scope="module")
def induction_model():
    if not os.path.isdir(FIXTURE):
        pytest.skip(f"{FIXTURE} is missing (scripts/make_induction_fixture.py writes it)")
    from transformers import GPTNeoXForCausalLM

    from mda_fast.core.localize import localize

    model = GPTNeoXForCausalLM.from_pretrained(FIXTURE, dtype=torch.float64, attn_implementation="sdpa").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    pm = localize(model, "prefix_matching", seq_len=10, n=16)
    layer, head = divmod(int(pm.argmax()), pm.shape[1])
    assert float(pm.max()) > 0.5, "the fixture model has no induction head"
    return model, HeadSpec(layer, head)


def test_induction_head_loss_tokens_are_aligned_on_repeated_rows(induction_model):
    """Rows whose second half repeats the first, the induction head of a trained model, the induction probe: the
    decomposition is exact, causal and aligned with the labels; an array shifted by one position, or labels that
    are the inputs (the classic bug), fail the same check."""
    model, spec = induction_model
    half, j, t = 10, 14, 12
    g = torch.Generator().manual_seed(11)
    rows = torch.cat([torch.randint(0, 64, (4, half), generator=g)] * 2, 1)
    fit = [torch.cat([torch.randint(0, 64, (16, half), generator=g)] * 2, 1)]
    factors = fit_ekfac(model, [spec], fit, progress=False)
    scorer = InfluenceScorer(model, [spec], factors, probe="induction", probe_kwargs={"L": 8}, backend="torch")
    name = scorer.target_names[0]
    out = scorer.per_token(rows)[name]
    lt = out["loss_token"]
    assert _rel(lt.sum(1), out["score"]) < 1e-10
    assert _rel(out["position"].sum(1), out["score"]) < 1e-10
    changed = rows.clone()
    changed[:, j] = (changed[:, j] + 1) % 64
    lt_changed = scorer.per_token(changed)[name]["loss_token"]
    mask = torch.zeros(4, rows.shape[1] - 1, dtype=torch.float64)
    mask[:, t] = 1
    masked = scorer.score(rows, mask=mask)[:, 0]
    assert _aligned(lt, lt_changed, j, masked, t)
    for shift in (1, -1):
        assert not _aligned(torch.roll(lt, shift, 1), torch.roll(lt_changed, shift, 1), j, masked, t), shift
    inputs, labels = split_rows(rows)
    tangents = weight_tangents(model, list(scorer.blocks.values()), scorer.queries, 0)
    assert torch.allclose(loss_token_scores(model, inputs, labels, None, tangents), lt, rtol=0, atol=1e-12)
    c_inputs, _ = split_rows(changed)
    bug, bug_changed = (loss_token_scores(model, x, x, None, tangents) for x in (inputs, c_inputs))
    assert not _aligned(bug, bug_changed, j, masked, t)


# ---- the CLI: analyze writes out/per_token/, resumes, and the report shows it --------------------------------


def _toml(d: dict) -> str:
    import json

    return "".join(f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in kv.items()) for s, kv in d.items())


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    import numpy as np

    from mda_fast.cli import main
    from mda_fast.data import write_megatron

    root = tmp_path_factory.mktemp("pt")
    rng = np.random.default_rng(0)
    first = rng.integers(0, 64, size=(40, 12))
    rows = np.concatenate([first, first, first[:, :1]], 1)  # 25 tokens: a repeat in every row
    rows[::2, 12:] = rng.integers(0, 64, size=(20, 13))  # half the rows without it
    write_megatron(str(root / "data" / "document"), rows.astype(np.uint16))
    for step in (0, 5, 10):
        make_tiny(n_layers=2, attn="sdpa", dtype=torch.float32, seed=step).save_pretrained(
            str(root / "run" / f"step{step}")
        )
    cfg = {
        "model": {"run_dir": str(root / "run"), "device": "cpu"},
        "data": {"path": str(root / "data" / "document"), "batch_size": 4, "seq_len": 25, "tokenizer": "bytes"},
        "window": {"start_step": 5, "end_step": 10},
        "targets": {"heads": [[1, 2]], "probe_L": 8, "probe_n": 4, "probe_low": 4, "probe_high": 60},
        "fit": {"n_sequences": 8, "batch_size": 4},
        "score": {"batch_size": 4, "chunk": 8},
        "analyze": {"table_k": 4, "snippet_tokens": 8, "per_token_k": 3},
    }
    path = root / "c.toml"
    path.write_text(_toml(cfg))
    out = str(root / "out")
    for cmd in ("fit", "score", "analyze", "report"):
        assert main([cmd, "--config", str(path), "--out", out, "--no-progress"]) == 0, cmd
    return {"cfg": str(path), "out": out, "main": main}


def test_analyze_writes_per_token_arrays_that_sum_to_the_stored_scores(cli_run):
    import json

    import numpy as np

    from mda_fast.stages.per_token import load_target

    out = cli_run["out"]
    summary = json.load(open(os.path.join(out, "per_token", "summary.json")))
    names = json.load(open(os.path.join(out, "score", "targets.json")))["target_names"]
    assert set(summary["targets"]) == set(names) and summary["k"] == 3
    scores = np.load(os.path.join(out, "score", "scores.npy"))
    gi_all = np.load(os.path.join(out, "score", "global_index.npy"))
    for j, name in enumerate(names):
        a = load_target(summary["files"][name])
        assert a["position"].shape == a["loss_token"].shape == (6, 24) and a["tokens"].shape == (6, 25)
        want_top = gi_all[np.argsort(-scores[:, j], kind="stable")[:3]]
        want_bottom = gi_all[np.argsort(scores[:, j], kind="stable")[:3]]
        assert list(a["global_index"]) == list(want_top) + list(want_bottom)
        assert list(a["side"]) == [0, 0, 0, 1, 1, 1]
        assert (np.diff(a["stored_score"][:3]) <= 0).all() and (np.diff(a["stored_score"][3:]) >= 0).all()
        s = summary["targets"][name]
        assert s["max_rel_diff"]["position"] < 1e-5 and s["max_rel_diff"]["loss_token"] < 1e-4
        assert s["recomputed_vs_stored"] < 1e-5
        assert 0 < s["top_loss_token"]["induction_position_share"] < 1


def test_analyze_resumes_per_token_and_recomputes_on_a_new_k(cli_run, monkeypatch):
    out, main = cli_run["out"], cli_run["main"]
    path = os.path.join(out, "per_token")
    before = {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path) if f.endswith(".npz")}

    def boom(*a, **k):
        raise AssertionError("per_token recomputed on a resume")

    monkeypatch.setattr(InfluenceScorer, "per_token", boom)
    assert main(["analyze", "--config", cli_run["cfg"], "--out", out, "--no-progress"]) == 0
    after = {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path) if f.endswith(".npz")}
    assert before == after
    monkeypatch.undo()
    assert (
        main(["analyze", "--config", cli_run["cfg"], "--out", out, "--no-progress", "--set", "analyze.per_token_k=2"])
        == 0
    )
    from mda_fast.stages.per_token import load_target

    assert all(load_target(os.path.join(path, f))["side"].shape == (4,) for f in before)


def test_report_shows_the_per_token_section(cli_run):
    html = open(os.path.join(cli_run["out"], "report.html"), encoding="utf-8").read()
    assert 'id="per-token"' in html and "by loss token" in html and "by position" in html
    assert "rgba(214,39,40," in html and "rgba(31,95,168," in html  # both colours: positive and negative tokens
    assert "builds the head (+)" in html  # the legend


def test_report_tokens_decode_per_token_with_the_neox_tokenizer():
    """GPT-NeoX pieces keep their spaces and the section escapes them (skips without ../shared)."""
    from mda_fast.data import get_decoder
    from mda_fast.study.report_tokens import per_token_section

    tok = os.path.join(
        os.path.dirname(os.path.dirname(FIXTURE)), "..", "..", "shared", "data", "gpt-neox-20b-tokenizer.json"
    )
    if not os.path.exists(tok):
        pytest.skip("../shared/data/gpt-neox-20b-tokenizer.json is absent")
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(tok).encode("def f(x): return x < 1  # <b>").ids
    decode = get_decoder(tok)
    row = {"tokens": ids, "loss_token": [0.1 * (-1) ** i for i in range(len(ids) - 1)], "position": [0.0] * (len(ids) - 1),
           "score": 1.0, "rank": 0, "global_index": 7}  # fmt: skip
    html = per_token_section({"L1H1:induction": [row]}, lambda t: decode([t]))
    assert html.count("<b>") == 2 and "&lt;</span>" in html  # the text's own markup is escaped
    assert '"> return</span>' in html  # a piece with its leading space


def test_report_renders_in_chromium(cli_run, tmp_path):
    """A real browser renders the report (skips without chromium): the screenshot is a non-blank PNG."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH")
    png = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tempfile.mkdtemp()}", f"--screenshot={png}", "--window-size=1280,2000"]  # fmt: skip
    url = "file://" + os.path.abspath(os.path.join(cli_run["out"], "report.html"))
    subprocess.run([exe, *flags, url], check=True, timeout=120, capture_output=True)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000


def test_induction_positions_and_shares():
    """On ``a b c d a b c d`` the loss tokens 4, 5, 6 (predicting the repeat's 2nd..4th tokens) are induction
    positions; 3 (predicting the repeat's first token) is not; a shift by one would move the mask."""
    import numpy as np

    from mda_fast.study.per_token import induction_positions, induction_share, share_by_category

    row = np.array([5, 6, 7, 8, 5, 6, 7, 8])
    assert induction_positions(row).tolist() == [False, False, False, False, True, True, True]
    vals = np.array([[0.0, 1.0, 0.0, -2.0, 3.0, 0.0, 0.0]])
    s = induction_share(vals, row[None])
    assert s["positive_share_on_induction"] == 0.75 and s["induction_position_share"] == 3 / 7
    assert s["net_on_induction"] == 3.0 and s["net_elsewhere"] == -1.0
    by = share_by_category(np.vstack([vals, vals]), np.vstack([row, row]), ["a", "b"])
    assert set(by) == {"a", "b"} and by["a"]["ratio"] == s["ratio"]
    assert share_by_category(vals, row[None], None) is None


def test_analyze_without_factors_fails_before_any_work_unless_per_token_is_off(cli_run, tmp_path, capsys):
    import shutil

    out = str(tmp_path / "copy")
    shutil.copytree(cli_run["out"], out)
    shutil.rmtree(os.path.join(out, "factors"))
    shutil.rmtree(os.path.join(out, "per_token"))
    base = ["analyze", "--config", cli_run["cfg"], "--out", out, "--no-progress"]
    assert cli_run["main"](base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "factors" in err[0] and "mda-fast fit" in err[0]
    assert not os.path.exists(os.path.join(out, "per_token"))
    assert cli_run["main"](base + ["--set", "analyze.per_token_k=0"]) == 0
    assert not os.path.exists(os.path.join(out, "per_token"))


def _family_models():
    from test_llama_layout import AVAILABLE, family_model

    out = [(f, lambda f=f: family_model(f)) for f in AVAILABLE]

    def gpt2():
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=64, n_positions=64, n_embd=32, n_layer=2, n_head=4, attn_implementation="sdpa")
        return GPT2LMHeadModel(cfg).double().eval().requires_grad_(False)

    return out + [("gpt2", gpt2)]


def _norms_in_float64(model):
    """HF's RMSNorm (Llama, Mistral, Qwen, OLMo-2) and OLMo's LayerNorm compute in float32 even in a float64 model,
    so forward-mode and reverse-mode derivatives through them agree only to ~1e-7; here they compute in the input's
    dtype, so the test sees our decomposition's exactness, not HF's float32 norms (with them: ``_rel`` ≈ 1e-7)."""
    import types

    import torch.nn.functional as F

    def rms(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def ln(self, x):
        return F.layer_norm(x, self.normalized_shape, None, None, eps=1e-5)

    for m in model.modules():
        name = type(m).__name__
        if name.endswith("RMSNorm"):
            m.forward = types.MethodType(rms, m)
        elif name == "OlmoLayerNorm":
            m.forward = types.MethodType(ln, m)
    return model


@pytest.mark.parametrize("family,build", _family_models(), ids=lambda x: x if isinstance(x, str) else "")
def test_both_decompositions_sum_to_the_score_on_every_family(family, build):
    """Every supported layout (GQA, q/k norms, Conv1D): both per-token decompositions sum to the row's score in
    float64, through the layout's own forward (HF's, with hooks)."""
    model = _norms_in_float64(build().double())
    vocab = model.config.vocab_size
    specs = [HeadSpec(1, 1, bias=family not in ("mistral", "llama", "olmo", "olmo2")), HeadSpec(0, 0, "qk")]
    g = torch.Generator().manual_seed(3)
    factors = fit_ekfac(model, specs, [torch.randint(0, vocab, (4, 17), generator=g)], progress=False)
    scorer = InfluenceScorer(model, specs, factors, probe="induction", probe_kwargs={"L": 6, "n": 3}, backend="torch")
    rows = torch.randint(0, vocab, (3, 17), generator=g)
    score = scorer.score(rows)
    out = scorer.per_token(rows)
    for k, name in enumerate(scorer.target_names):
        for part in ("position", "loss_token"):
            assert _rel(out[name][part].sum(1), score[:, k]) < 1e-10, (family, name, part)
