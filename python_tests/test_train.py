"""Trainer: presets, schedule, loss, recipe, per-sample interventions, checkpoints and exact resumption."""

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

from mda_fast.data import PythiaBatches, write_megatron
from mda_fast.train import (
    PRESETS,
    STATE_FILE,
    CosineSchedule,
    Insertion,
    Interventions,
    TrainConfig,
    Trainer,
    branch_from_checkpoint,
    checkpoint_steps,
    get_preset,
    lm_loss,
    load_checkpoint_model,
    make_model,
    model_config,
    param_groups,
    read_jsonl,
)

B, S = 8, 17  # batch size, seq_len (T = 16)
T = S - 1
N_STEPS = 10


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1234)
    seqs = rng.integers(0, 64, size=(B * N_STEPS + 3, S))  # learnable unigram; 3 rows of a partial batch
    write_megatron(str(d / "toy"), seqs, dtype=np.uint16, n_shards=2)
    batches = PythiaBatches(str(d / "toy"), batch_size=B, seq_len=S)
    assert np.array_equal(batches.step(2), seqs[2 * B : 3 * B])
    return batches


def cfg(tmp_path, name="run", **kw):
    base = dict(
        preset="tiny-2l",
        total_steps=N_STEPS,
        lr=3e-3,
        seed=7,
        checkpoint_every=5,
        device="cpu",
        out_dir=str(tmp_path / name),
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def assert_close_dicts(a, b, rtol=1e-5, atol=1e-7):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


def max_rel_diff(a, b):
    num = max(float((a[k] - b[k]).abs().max()) for k in a)
    den = max(float(a[k].abs().max()) for k in a)
    return num / den


# ---------------------------------------------------------------------------------------------------------------
# presets


@pytest.mark.parametrize(
    "name,layers,d,heads",
    [("pythia-14m", 6, 128, 4), ("pythia-31m", 6, 256, 8), ("pythia-70m", 6, 512, 8), ("pythia-160m", 12, 768, 12)],
)
def test_pythia_presets_match_table(name, layers, d, heads):
    c = model_config(name)
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (layers, d, heads, 50304)
    assert c.intermediate_size == 4 * d
    assert c.use_parallel_residual is True and c.tie_word_embeddings is False
    assert c.max_position_embeddings == 2048
    rope = getattr(c, "rope_parameters", None) or {}
    assert rope.get("partial_rotary_factor", getattr(c, "rotary_pct", None)) == 0.25


def test_tiny_presets_byte_vocab_and_shapes():
    for name in ("tiny-2l", "tiny-3l", "tiny-4l"):
        p = get_preset(name)
        assert p.vocab_size == 260 and 2 <= p.n_layers <= 4 and 64 <= p.d_model <= 128
        assert p.d_model % p.n_heads == 0 and int(p.d_head * p.rotary_pct) % 2 == 0


def test_make_model_param_count_untied_and_seeded():
    m = make_model("pythia-14m", seed=0)
    V, d, L = 50304, 128, 6
    assert sum(p.numel() for p in m.parameters()) == 2 * V * d + L * (12 * d * d + 13 * d) + 2 * d  # 14,067,712
    assert m.get_output_embeddings().weight.data_ptr() != m.get_input_embeddings().weight.data_ptr()
    assert m.config._attn_implementation == "sdpa"
    a, b, c = make_model("tiny-2l", 3), make_model("tiny-2l", 3), make_model("tiny-2l", 4)
    w = "gpt_neox.layers.0.attention.query_key_value.weight"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert all(p.dtype == torch.float32 for p in a.parameters())
    torch.manual_seed(0)
    r0 = torch.rand(1)
    torch.manual_seed(0)
    make_model("tiny-2l", 5)
    assert torch.equal(torch.rand(1), r0), "make_model must not consume the caller's RNG"


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset 'pythia-1b'"):
        get_preset("pythia-1b")
    with pytest.raises(TypeError, match="preset"):
        get_preset(3)
    with pytest.raises(ValueError, match="attn_implementation"):
        make_model("tiny-2l", attn_implementation="flash")
    assert set(PRESETS) >= {"pythia-14m", "pythia-160m", "tiny-2l"}


# ---------------------------------------------------------------------------------------------------------------
# schedule


def test_cosine_schedule_values():
    s = CosineSchedule(peak_lr=1e-3, total_steps=1000, warmup_frac=0.01, min_lr_frac=0.1)
    assert s.warmup_steps == 10
    assert s.lr(0) == pytest.approx(1e-4)
    assert s.lr(4) == pytest.approx(5e-4)
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.lr(10) == pytest.approx(1e-3)
    assert s.lr(505) == pytest.approx(0.55e-3)  # halfway through the cosine: (peak + floor) / 2
    assert s.lr(1000) == pytest.approx(1e-4)
    assert s.lr(5000) == pytest.approx(1e-4)  # floor holds past the end
    lrs = [s.lr(k) for k in range(1001)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # warmup increases
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine never increases
    assert min(lrs) == pytest.approx(1e-4)
    ref = 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * (300 - 10) / 990))
    assert s.lr(300) == pytest.approx(ref, rel=1e-12)
    assert CosineSchedule(1e-3, 50).warmup_steps == 1  # at least one warmup step
    with pytest.raises(ValueError, match="total_steps"):
        CosineSchedule(1e-3, 0)
    with pytest.raises(ValueError, match="warmup_frac"):
        CosineSchedule(1e-3, 10, warmup_frac=1.0)
    with pytest.raises(ValueError, match="step"):
        s.lr(-1)


def test_checkpoint_steps_pythia_schedule():
    assert checkpoint_steps(3000, every=1000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]
    assert checkpoint_steps(2500, every=1000, extra=[700]) == [
        0,
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        700,
        1000,
        2000,
        2500,
    ]
    assert checkpoint_steps(10, every=5) == [0, 1, 2, 4, 5, 8, 10]
    with pytest.raises(ValueError, match="extra checkpoint step 11"):
        checkpoint_steps(10, every=5, extra=[11])
    with pytest.raises(ValueError, match="checkpoint_every"):
        checkpoint_steps(10, every=0)


# ---------------------------------------------------------------------------------------------------------------
# loss and optimizer groups


def test_lm_loss_matches_float64_reference():
    model = make_model("tiny-2l", 0)
    g = torch.Generator().manual_seed(0)
    tok = torch.randint(0, 260, (3, 9), generator=g)
    w = torch.rand(3, 8, generator=g)
    got = lm_loss(model, tok, denominator=17.0, token_weights=w)
    with torch.no_grad():
        ref = 0.0
        for n in range(3):
            for t in range(8):  # predict tok[n, t+1] from tok[n, :t+1]
                logits = model(input_ids=tok[n : n + 1, : t + 1]).logits[0, -1].double()
                ref += float(w[n, t]) * -float(torch.log_softmax(logits, -1)[tok[n, t + 1]])
    assert float(got.detach()) == pytest.approx(ref / 17.0, rel=1e-5)
    # default: mean over N*T tokens
    ce_mean = lm_loss(model, tok)
    ones = lm_loss(model, tok, token_weights=torch.ones(3, 8))
    assert float(ce_mean.detach()) == pytest.approx(float(ones.detach()), rel=1e-6)
    with pytest.raises(ValueError, match="token_weights"):
        lm_loss(model, tok, token_weights=torch.ones(3, 9))
    with pytest.raises(ValueError, match="tokens"):
        lm_loss(model, tok[:, :1])


def test_param_groups_no_decay_on_bias_and_layernorm():
    model = make_model("tiny-2l", 0)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    dc = {names[id(p)] for p in decay["params"]}
    assert nd | dc == set(names.values()) and not nd & dc
    for n in nd:
        assert n.endswith(".bias") or "layernorm" in n or "layer_norm" in n, n
    for n in dc:
        assert n.endswith(".weight") and "norm" not in n, n
    assert "gpt_neox.embed_in.weight" in dc and "lm_head.weight" in dc
    assert "gpt_neox.final_layer_norm.weight" in nd and "gpt_neox.layers.1.input_layernorm.weight" in nd
    assert len(dc) == 2 + 4 * 2  # embeddings, unembedding, 4 linear weights per layer


def test_two_steps_match_manual_adamw_reference(tmp_path, data):
    """Recipe check: clipping, AdamW (betas, eps, bias correction, decoupled decay by group) and the LR schedule,
    against a float64 re-implementation."""
    c = cfg(tmp_path, total_steps=100, lr=1e-2, clip=0.05, warmup_frac=0.05)
    tr = Trainer(c, data)
    tr.init_model()
    ref_model = copy.deepcopy(tr.model)
    decay_names = {
        n
        for n, p in ref_model.named_parameters()
        if id(p) in {id(q) for q in param_groups(ref_model, 0.1)[0]["params"]}
    }
    p64 = {n: p.detach().double().clone() for n, p in ref_model.named_parameters()}
    m = {n: torch.zeros_like(v) for n, v in p64.items()}
    v = {n: torch.zeros_like(x) for n, x in p64.items()}
    for k in range(2):
        metrics = tr.train_step(tr.compose(k))
        # reference gradient at the reference weights (fp32 forward, as the trainer does)
        with torch.no_grad():
            for n, p in ref_model.named_parameters():
                p.copy_(p64[n].float())
        ref_model.zero_grad()
        lm_loss(ref_model, torch.from_numpy(data.step(k).astype(np.int64)), B * T).backward()
        gr = {n: p.grad.double() for n, p in ref_model.named_parameters()}
        norm = math.sqrt(sum(float((g * g).sum()) for g in gr.values()))
        assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert norm > 0.05, "clipping must be active for this test"
        lr = 1e-2 * (k + 1) / 5
        assert metrics["lr"] == pytest.approx(lr)
        for n in p64:
            g = gr[n] * (0.05 / (norm + 1e-6))
            wd = 0.1 if n in decay_names else 0.0
            p64[n] *= 1 - lr * wd
            m[n] = 0.9 * m[n] + 0.1 * g
            v[n] = 0.95 * v[n] + 0.05 * g * g
            mh, vh = m[n] / (1 - 0.9 ** (k + 1)), v[n] / (1 - 0.95 ** (k + 1))
            p64[n] -= lr * mh / (vh.sqrt() + 1e-8)
    got = params(tr.model)
    for n in p64:
        torch.testing.assert_close(got[n].double(), p64[n], rtol=0, atol=2e-6, msg=n)
    assert max_rel_diff(got, params(make_model("tiny-2l", 7))) > 1e-3  # the weights did move
    assert tr.step == 2


# ---------------------------------------------------------------------------------------------------------------
# interventions


def test_delete_equals_zero_loss_weight_and_keeps_other_gradients(tmp_path, data):
    k, pos = 3, 5
    i = k * B + pos
    tr = Trainer(cfg(tmp_path), data, Interventions(delete={i, 999}))
    tr.init_model()
    batch = tr.compose(k)
    assert batch.record["deleted"] == [i] and batch.tokens.shape == (B - 1, S)
    assert batch.record["indices"] == [k * B + p for p in range(B) if p != pos]
    assert batch.denominator == B * T
    tr.model.zero_grad()
    tr.forward_backward(batch)
    g_del = grads(tr.model)

    full = torch.from_numpy(data.step(k).astype(np.int64))
    w = torch.ones(B, T)
    w[pos] = 0
    tr.model.zero_grad()
    lm_loss(tr.model, full, B * T, token_weights=w).backward()
    g_w0 = grads(tr.model)
    assert_close_dicts(g_del, g_w0, rtol=1e-5, atol=1e-8)

    # other samples' gradients unchanged: sum of per-sample gradients over n != pos, each / (B*T)
    acc = None
    for n in range(B):
        if n == pos:
            continue
        tr.model.zero_grad()
        lm_loss(tr.model, full[n : n + 1], B * T).backward()
        gn = grads(tr.model)
        acc = gn if acc is None else {q: acc[q] + gn[q] for q in acc}
    assert_close_dicts(g_del, acc, rtol=1e-5, atol=1e-8)

    # the test can fail: the unmodified batch and a renormalised (B-1)*T denominator both differ
    tr.model.zero_grad()
    lm_loss(tr.model, full, B * T).backward()
    assert max_rel_diff(grads(tr.model), g_del) > 1e-3
    renorm = {q: g * B / (B - 1) for q, g in g_del.items()}
    assert max_rel_diff(renorm, g_del) > 1e-2
    # steps without a deleted sample are untouched
    assert tr.compose(k + 1).record["deleted"] == [] and tr.compose(k + 1).tokens.shape == (B, S)


def test_insert_append_rows_log_and_gradient(tmp_path, data):
    raw = np.arange(S) % 260
    iv = Interventions(
        insert=[Insertion(step=2, index=13), Insertion(step=2, tokens=raw, name="mine"), Insertion(step=4, index=70)]
    )
    tr = Trainer(cfg(tmp_path), data, iv)
    tr.init_model()
    b = tr.compose(2)
    assert b.tokens.shape == (B + 2, S) and b.denominator == B * T
    assert np.array_equal(b.tokens[:B].numpy(), data.step(2).astype(np.int64))
    assert np.array_equal(b.tokens[B].numpy(), data.rows(np.array([13]))[0])
    assert np.array_equal(b.tokens[B + 1].numpy(), raw)
    assert b.record["inserted"] == [
        {"id": "idx13", "index": 13, "slot": None, "row": B},
        {"id": "mine", "index": None, "slot": None, "row": B + 1},
    ]
    # gradient = unmodified gradient + inserted samples' gradients / (B*T)
    tr.model.zero_grad()
    tr.forward_backward(b)
    g = grads(tr.model)
    tr.model.zero_grad()
    lm_loss(tr.model, b.tokens[:B], B * T).backward()
    g_base = grads(tr.model)
    tr.model.zero_grad()
    lm_loss(tr.model, b.tokens[B:], B * T).backward()
    g_ins = grads(tr.model)
    assert_close_dicts(g, {q: g_base[q] + g_ins[q] for q in g}, rtol=1e-5, atol=1e-8)

    tr.train(end_step=6)
    log = read_jsonl(os.path.join(tr.out_dir, "batches.jsonl"))
    assert [r["step"] for r in log] == list(range(6))
    for r in log:
        expect = {2: ["idx13", "mine"], 4: ["idx70"]}.get(r["step"], [])
        assert [x["id"] for x in r["inserted"]] == expect
        assert r["indices"] == list(range(r["step"] * B, (r["step"] + 1) * B))
        assert r["n_rows"] == B + len(expect)
    metrics = read_jsonl(os.path.join(tr.out_dir, "metrics.jsonl"))
    assert [m["n_rows"] for m in metrics] == [B, B, B + 2, B, B + 1, B]
    assert json.load(open(os.path.join(tr.out_dir, "interventions.json")))["insert"][1]["n_tokens"] == S


def test_insert_replace_positions_seeded_and_logged(tmp_path, data):
    def make(seed):
        return Interventions(
            delete={5 * B + 1},
            insert=[Insertion(step=5, index=3), Insertion(step=5, index=4, position=6), Insertion(step=5, index=9)],
            insert_mode="replace",
            seed=seed,
        )

    tr = Trainer(cfg(tmp_path), data, make(0))
    b = tr.compose(5)
    rec = b.record
    assert b.tokens.shape == (B - 1, S) and b.denominator == B * T  # one deleted, three replaced
    slots = [x["slot"] for x in rec["inserted"]]
    assert 6 in slots and len(set(slots)) == 3 and 1 not in slots  # random slots avoid deleted and taken ones
    assert sorted(rec["replaced"]) == sorted(5 * B + s for s in slots)
    assert rec["deleted"] == [5 * B + 1]
    assert set(rec["indices"]) == set(range(5 * B, 6 * B)) - {5 * B + 1} - set(rec["replaced"])
    for x in rec["inserted"]:
        assert np.array_equal(b.tokens[x["row"]].numpy(), data.rows(np.array([x["index"]]))[0])
    assert Trainer(cfg(tmp_path), data, make(0)).compose(5).record == rec  # reproducible from the seed
    others = [Trainer(cfg(tmp_path), data, make(s)).compose(5).record["replaced"] for s in range(1, 6)]
    assert any(sorted(o) != sorted(rec["replaced"]) for o in others)  # and the seed matters


def test_duplicate_helper_round_robin():
    iv = Interventions.duplicate([10, 11, 12], steps=[4, 6])
    assert [(it.step, it.index) for it in iv.insert] == [(4, 10), (6, 11), (4, 12)]
    assert [it.name for it in iv.at_step(4)] == ["idx10", "idx12"] and iv.at_step(5) == []


def test_intervention_validation(tmp_path, data):
    with pytest.raises(ValueError, match="delete"):
        Interventions(delete={-1})
    with pytest.raises(ValueError, match="insert_mode"):
        Interventions(insert_mode="prepend")
    with pytest.raises(ValueError, match="exactly one of index= or tokens="):
        Interventions(insert=[Insertion(step=1)])
    with pytest.raises(TypeError, match=r"insert\[0\]"):
        Interventions(insert=[(1, 2)])
    with pytest.raises(ValueError, match="same position"):
        Interventions(
            insert=[Insertion(1, index=0, position=2), Insertion(1, index=1, position=2)], insert_mode="replace"
        )
    with pytest.raises(ValueError, match="raw tokens have length 5"):
        Trainer(cfg(tmp_path), data, Interventions(insert=[Insertion(1, tokens=np.zeros(5, np.int64))]))
    with pytest.raises(ValueError, match="index 100000 outside"):
        Trainer(cfg(tmp_path), data, Interventions(insert=[Insertion(1, index=100000)]))
    tr = Trainer(cfg(tmp_path), data, Interventions(insert=[Insertion(1, tokens=np.full(S, 300))]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tr.compose(1)
    with pytest.raises(TypeError, match="data"):
        Trainer(cfg(tmp_path), object())
    with pytest.raises(ValueError, match="end_step=11"):
        Trainer(cfg(tmp_path), data).train(end_step=11)
    with pytest.raises(ValueError, match="fresh run starts at 0"):
        Trainer(cfg(tmp_path), data).train(start_step=3)
    with pytest.raises(ValueError, match="only 10 steps"):
        Trainer(cfg(tmp_path, total_steps=20), data).train()
    with pytest.raises(ValueError, match="device"):
        cfg(tmp_path, device="tpu")


# ---------------------------------------------------------------------------------------------------------------
# checkpoints, resumption, branching


def test_checkpoints_schedule_loadable_and_eval_hook(tmp_path, data):
    from transformers import GPTNeoXForCausalLM

    seen = []

    def eval_fn(model, step):
        seen.append(step)
        return {"w0": float(model.gpt_neox.embed_in.weight[0, 0].detach())}

    tr = Trainer(cfg(tmp_path, checkpoint_extra=(3,)), data, eval_fn=eval_fn).train()
    expect = [0, 1, 2, 3, 4, 5, 8, 10]
    dirs = sorted(int(d[4:]) for d in os.listdir(tr.out_dir) if d.startswith("step"))
    assert dirs == expect and seen == expect
    ev = read_jsonl(os.path.join(tr.out_dir, "eval.jsonl"))
    assert [r["step"] for r in ev] == expect
    m0 = GPTNeoXForCausalLM.from_pretrained(tr.checkpoint_dir(0))
    assert all(
        torch.equal(a, b) for a, b in zip(m0.state_dict().values(), make_model("tiny-2l", 7).state_dict().values())
    )
    m10 = load_checkpoint_model(tr.checkpoint_dir(10))
    assert_close_dicts(params(m10), params(tr.model), rtol=0, atol=0)
    assert ev[-1]["w0"] == float(m10.gpt_neox.embed_in.weight[0, 0].detach())
    metrics = read_jsonl(os.path.join(tr.out_dir, "metrics.jsonl"))
    assert [m["step"] for m in metrics] == list(range(10))
    assert all(m["tokens_per_s"] > 0 and m["grad_norm"] > 0 and math.isfinite(m["loss"]) for m in metrics)
    assert [m["lr"] for m in metrics] == [tr.schedule.lr(k) for k in range(10)]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    with pytest.raises(ValueError, match="not a trainer checkpoint"):
        Trainer(cfg(tmp_path, name="x"), data).train(resume_from=str(tmp_path))


def test_stop_callback_ends_at_the_checkpoint_it_accepts(tmp_path, data):
    """``train(stop=...)`` is asked after each checkpoint's save and eval; True ends the run right there, and the
    weights equal an uninterrupted run's at that step."""
    asked = []

    def eval_fn(model, step):
        return {"step_seen": step}

    def stop(step):
        asked.append(step)
        # the eval record of this checkpoint is already written when stop is asked
        assert read_jsonl(os.path.join(tmp_path / "stop", "eval.jsonl"))[-1]["step"] == step
        return step >= 4

    tr = Trainer(cfg(tmp_path, "stop", checkpoint_every=2), data, eval_fn=eval_fn).train(stop=stop)
    assert tr.step == 4 and asked[:2] == [1, 2] and asked[-1] == 4
    dirs = sorted(int(d[4:]) for d in os.listdir(tr.out_dir) if d.startswith("step"))
    assert max(dirs) == 4
    assert [m["step"] for m in read_jsonl(os.path.join(tr.out_dir, "metrics.jsonl"))] == [0, 1, 2, 3]
    ref = Trainer(cfg(tmp_path, "ref", checkpoint_every=2), data).train(end_step=4)
    assert_close_dicts(params(tr.model), params(ref.model), rtol=0, atol=0)
    # never stopping runs to end_step
    tr2 = Trainer(cfg(tmp_path, "nostop", checkpoint_every=2), data).train(end_step=6, stop=lambda s: False)
    assert tr2.step == 6


def test_resume_reproduces_uninterrupted_run_bitwise(tmp_path, data):
    iv = Interventions(delete={9, 30}, insert=[Insertion(step=6, index=2)])
    full = Trainer(cfg(tmp_path, "full", checkpoint_extra=(3,)), data, iv).train()
    # interrupted run: stops at step 7, resumes from checkpoint 3 (logs past step 3 are rewritten)
    part = Trainer(cfg(tmp_path, "part", checkpoint_extra=(3,)), data, iv)
    part.train(end_step=7)
    resumed = Trainer(cfg(tmp_path, "part", checkpoint_extra=(3,)), data, iv)
    resumed.train(resume_from=part.checkpoint_dir(3))
    assert_close_dicts(params(resumed.model), params(full.model), rtol=0, atol=0)
    so, sr = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for key in so:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(so[key][name], sr[key][name])
    for log in ("metrics.jsonl", "batches.jsonl"):
        a = read_jsonl(os.path.join(full.out_dir, log))
        b = read_jsonl(os.path.join(resumed.out_dir, log))
        strip = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_s")}  # noqa: E731
        assert [strip(r) for r in a] == [strip(r) for r in b]
    # the saved final checkpoints agree too
    assert_close_dicts(
        params(load_checkpoint_model(full.checkpoint_dir(10))),
        params(load_checkpoint_model(resumed.checkpoint_dir(10))),
        rtol=0,
        atol=0,
    )
    # continuing in memory (train twice on one trainer) gives the same result
    cont = Trainer(cfg(tmp_path, "cont", checkpoint_extra=(3,)), data, iv)
    cont.train(end_step=4)
    cont.train(start_step=4)
    assert_close_dicts(params(cont.model), params(full.model), rtol=0, atol=0)


def test_branch_from_checkpoint_shares_state_and_differs_only_by_intervention(tmp_path, data):
    calls = []
    base = Trainer(cfg(tmp_path, "base"), data).train()
    arm0 = branch_from_checkpoint(
        base.checkpoint_dir(4), data, str(tmp_path / "arm0"), eval_fn=lambda m, s: calls.append(s) or {"s": s}
    )
    assert arm0.step == 4 and arm0.config.lr == 3e-3 and arm0.config.out_dir == str(tmp_path / "arm0")
    arm0.train()
    assert_close_dicts(params(arm0.model), params(base.model), rtol=0, atol=0)  # no intervention: same run
    assert calls == [4, 5, 8, 10]  # the start checkpoint is evaluated in the arm's own log
    assert read_jsonl(str(tmp_path / "arm0" / "batches.jsonl"))[0]["step"] == 4
    assert os.path.exists(tmp_path / "arm0" / "step4" / STATE_FILE)

    arm1 = branch_from_checkpoint(
        base.checkpoint_dir(4), data, str(tmp_path / "arm1"), Interventions(delete={4 * B + 2})
    )
    arm1.train(end_step=5)
    one = Trainer(cfg(tmp_path, "one"), data)
    one.train(resume_from=base.checkpoint_dir(4), end_step=5)
    d = max_rel_diff(params(arm1.model), params(one.model))
    assert 0 < d, "deleting a sample must change the weights"
    log = read_jsonl(str(tmp_path / "arm1" / "batches.jsonl"))
    assert log == [
        {
            "step": 4,
            "indices": [4 * B + p for p in range(B) if p != 2],
            "deleted": [4 * B + 2],
            "inserted": [],
            "replaced": [],
            "n_rows": B - 1,
            "denominator": B * T,
        }
    ]
    with pytest.raises(ValueError, match="start_step=3"):
        branch_from_checkpoint(base.checkpoint_dir(4), data, str(tmp_path / "arm2")).train(start_step=3)


def test_resume_rejects_mismatched_data(tmp_path, data):
    base = Trainer(cfg(tmp_path, "base"), data)
    base.train(end_step=1)
    other = PythiaBatches(data.path, batch_size=4, seq_len=S)
    with pytest.raises(ValueError, match="batch_size=8"):
        Trainer(cfg(tmp_path, "o"), other).train(resume_from=base.checkpoint_dir(1))
    with pytest.raises(ValueError, match="preset"):
        Trainer(cfg(tmp_path, "o", preset="tiny-3l"), data).train(resume_from=base.checkpoint_dir(1))


def test_micro_batches_match_full_batch(tmp_path, data):
    tr = Trainer(cfg(tmp_path), data, Interventions(insert=[Insertion(step=1, index=0)]))
    tr.init_model()
    b = tr.compose(1)
    tr.model.zero_grad()
    l_full = tr.forward_backward(b)
    g_full = grads(tr.model)
    tr.config.micro_batch_size = 4  # 9 rows -> chunks of 4, 4, 1
    tr.model.zero_grad()
    l_mb = tr.forward_backward(b)
    assert l_mb == pytest.approx(l_full, rel=1e-6)
    assert_close_dicts(grads(tr.model), g_full, rtol=1e-5, atol=1e-8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_autocast_step(tmp_path, data):
    tr = Trainer(cfg(tmp_path, device="cuda"), data)
    assert tr.autocast_dtype == torch.bfloat16
    tr.train(end_step=3)
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())
    losses = [m["loss"] for m in read_jsonl(os.path.join(tr.out_dir, "metrics.jsonl"))]
    cpu = Trainer(cfg(tmp_path, "cpu"), data).train(end_step=3)
    ref = [m["loss"] for m in read_jsonl(os.path.join(cpu.out_dir, "metrics.jsonl"))]
    assert losses == pytest.approx(ref, rel=2e-2)
