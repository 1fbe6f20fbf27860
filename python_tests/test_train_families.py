"""Training every family (``train.family``): the preset's sizes in each layout, the Pythia recipe's parameter groups
(no decay on biases and on LayerNorm / RMSNorm weights), one AdamW step against a float64 re-implementation,
checkpoints that round-trip and resume bitwise, branching, and refusing a checkpoint of another family."""

import copy
import math

import numpy as np
import pytest
import torch

from mda_fast.data import PythiaBatches, write_megatron
from mda_fast.train import (
    FAMILIES,
    TrainConfig,
    Trainer,
    branch_from_checkpoint,
    get_preset,
    lm_loss,
    load_checkpoint_model,
    make_model,
    model_config,
    param_groups,
)
from mda_fast.train.presets import kv_heads

torch.set_num_threads(1)

B, S = 8, 17  # batch size, seq_len (T = 16)
T = S - 1

CLASSES = {
    "gpt_neox": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    write_megatron(str(d / "toy"), rng.integers(0, 64, size=(B * 6, S)), dtype=np.uint16)
    return PythiaBatches(str(d / "toy"), batch_size=B, seq_len=S)


def cfg(tmp_path, family, name="run", **kw):
    base = dict(
        preset="tiny-2l",
        family=family,
        total_steps=20,
        lr=1e-2,
        seed=3,
        checkpoint_every=2,
        device="cpu",
        out_dir=str(tmp_path / name),
        progress=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_families_are_the_schema_choices():
    from mda_fast.config.schema import TRAIN_FAMILIES

    assert tuple(TRAIN_FAMILIES) == tuple(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_preset_sizes_in_every_family(family):
    p = get_preset("tiny-2l")
    c = model_config("tiny-2l", family)
    assert c.model_type == family
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.vocab_size) == (
        p.n_layers,
        p.d_model,
        p.n_heads,
        p.vocab_size,
    )
    assert c.max_position_embeddings == p.max_position_embeddings
    m = make_model("tiny-2l", seed=5, family=family)
    assert type(m).__name__ == CLASSES[family]
    assert all(
        torch.equal(a, b)
        for a, b in zip(m.state_dict().values(), make_model("tiny-2l", 5, family=family).state_dict().values())
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(m.state_dict().values(), make_model("tiny-2l", 6, family=family).state_dict().values())
    )
    for name in ("attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "hidden_dropout"):
        assert getattr(c, name, 0.0) == 0.0, name  # deterministic steps
    assert c.tie_word_embeddings == (family == "gpt2")
    if family == "gpt2":
        assert m.lm_head.weight is m.transformer.wte.weight


def test_llama_is_grouped_query():
    """tiny-2l has 4 query heads: the grouped-query families get 2 key/value heads, with K/V rows to match."""
    m = make_model("tiny-2l", 0, family="llama")
    att = m.model.layers[0].self_attn
    d_head = 64 // 4
    assert m.config.num_key_value_heads == 2 == kv_heads("tiny-2l", "llama")
    assert tuple(att.q_proj.weight.shape) == (4 * d_head, 64)
    assert tuple(att.k_proj.weight.shape) == (2 * d_head, 64) == tuple(att.v_proj.weight.shape)
    assert kv_heads("tiny-1l", "llama") == 1 and kv_heads("tiny-2l", "olmo2") == 4 and kv_heads("tiny-2l", "gpt2") == 4


@pytest.mark.parametrize("family", FAMILIES)
def test_param_groups_no_decay_on_biases_and_every_norm(family):
    """Every bias and every norm weight (LayerNorm, the families' RMSNorm, OLMo-2's and Qwen3's q/k norms) is
    undecayed; every matrix (linear, embedding, GPT-2's Conv1D) is decayed; each parameter is in one group."""
    model = make_model("tiny-2l", 0, family=family)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    dc = {names[id(p)] for p in decay["params"]}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert dc | nd == set(names.values()) and not dc & nd
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)
    shapes = dict(model.named_parameters())
    for n in nd:
        assert shapes[n].dim() == 1, n
    for n in dc:
        assert shapes[n].dim() == 2, n
    assert {n for n, p in shapes.items() if p.dim() == 1} == nd
    norm_weights = {n for n in names.values() if "norm" in n or ".ln_" in n}
    assert norm_weights and norm_weights <= nd
    if family in ("olmo2", "qwen3"):
        assert any("q_norm" in n for n in nd) and any("k_norm" in n for n in nd)


def _reference_steps(tr, data, n_steps, lr_at, clip, wd=0.1):
    """The trainer's first ``n_steps`` steps, and the same recipe re-implemented in float64 (clip, AdamW with bias
    correction and decoupled decay by group, the LR schedule) on its own float64 weights, from the trainer's
    initial weights."""
    ref_model = copy.deepcopy(tr.model)
    decay_ids = {id(q) for q in param_groups(ref_model, wd)[0]["params"]}
    decay_names = {n for n, p in ref_model.named_parameters() if id(p) in decay_ids}
    p64 = {n: p.detach().double().clone() for n, p in ref_model.named_parameters()}
    m = {n: torch.zeros_like(v) for n, v in p64.items()}
    v = {n: torch.zeros_like(x) for n, x in p64.items()}
    for k in range(n_steps):
        # the gradient at the trainer's own weights (fp32, as the trainer computes it): the check is of the update
        # rule; Adam divides by sqrt(v), so a gradient taken at weights 1e-7 away would differ too much where a
        # component is near eps
        with torch.no_grad():
            for (n, p), q in zip(ref_model.named_parameters(), tr.model.parameters()):
                p.copy_(q)
        ref_model.zero_grad()
        lm_loss(ref_model, torch.from_numpy(data.step(k).astype(np.int64)), B * T).backward()
        gr = {n: p.grad.double() for n, p in ref_model.named_parameters()}
        metrics = tr.train_step(tr.compose(k))
        norm = math.sqrt(sum(float((g * g).sum()) for g in gr.values()))
        assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-5)
        assert norm > clip, "clipping must be active for this test"
        lr = lr_at(k)
        assert metrics["lr"] == pytest.approx(lr)
        for n in p64:
            g = gr[n] * (clip / (norm + 1e-6))
            p64[n] *= 1 - lr * (wd if n in decay_names else 0.0)
            m[n] = 0.9 * m[n] + 0.1 * g
            v[n] = 0.95 * v[n] + 0.05 * g * g
            mh, vh = m[n] / (1 - 0.9 ** (k + 1)), v[n] / (1 - 0.95 ** (k + 1))
            p64[n] -= lr * mh / (vh.sqrt() + 1e-8)
    return p64, decay_names


@pytest.mark.parametrize("family", FAMILIES)
def test_two_steps_match_float64_adamw(tmp_path, data, family):
    c = cfg(tmp_path, family, total_steps=100, clip=0.05, warmup_frac=0.05)
    tr = Trainer(c, data)
    tr.init_model()
    w0 = params(tr.model)
    p64, decay_names = _reference_steps(tr, data, 2, lambda k: 1e-2 * (k + 1) / 5, clip=0.05)
    got = params(tr.model)
    for n in p64:
        torch.testing.assert_close(got[n].double(), p64[n], rtol=0, atol=3e-7, msg=n)  # fp32 rounding of ~1
    moved = max(float((got[n] - w0[n]).abs().max()) for n in got)
    assert moved > 1e-3  # the weights did move, far beyond the tolerance
    assert any("norm" in n or ".ln_" in n for n in set(p64) - decay_names)


@pytest.mark.parametrize("family", ["llama", "olmo2", "gpt2", "qwen2"])
def test_checkpoints_round_trip_resume_and_branch(tmp_path, data, family):
    """A step{k} checkpoint of every family reloads to the same class and weights; resuming from it reproduces the
    uninterrupted run bitwise; a branch keeps the family."""
    full = Trainer(cfg(tmp_path, family, "full"), data)
    full.train(end_step=4)
    back = load_checkpoint_model(full.checkpoint_dir(4))
    assert type(back).__name__ == CLASSES[family] and back.config.model_type == family
    saved = params(full.model)
    assert {n: p for n, p in params(back).items()}.keys() == saved.keys()
    assert all(torch.equal(params(back)[n], saved[n]) for n in saved)
    if family == "gpt2":
        assert back.lm_head.weight is back.transformer.wte.weight  # still tied after the round trip

    half = Trainer(cfg(tmp_path, family, "half"), data)
    half.train(end_step=2)
    resumed = Trainer(cfg(tmp_path, family, "half"), data)
    resumed.train(resume_from=half.checkpoint_dir(2), end_step=4)
    assert all(torch.equal(params(resumed.model)[n], saved[n]) for n in saved)

    arm = branch_from_checkpoint(full.checkpoint_dir(2), data, str(tmp_path / "arm"))
    assert arm.config.family == family and arm.model.config.model_type == family
    arm.train(end_step=4)
    assert all(torch.equal(params(arm.model)[n], saved[n]) for n in saved)


def test_a_checkpoint_of_another_family_is_refused(tmp_path, data):
    llama = Trainer(cfg(tmp_path, "llama", "llama"), data)
    llama.train(end_step=2)
    neox = Trainer(cfg(tmp_path, "gpt_neox", "neox"), data)
    with pytest.raises(ValueError, match="model family 'llama' differs from config.family 'gpt_neox'"):
        neox.load_checkpoint(llama.checkpoint_dir(2))
    with pytest.raises(ValueError, match="is a 'llama' model; config.family is 'gpt_neox'"):
        neox.start_from_weights(llama.checkpoint_dir(2), 2)


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match=r"family: unknown model family 'bloom'; expected one of \['gpt_neox'"):
        TrainConfig(family="bloom")
    with pytest.raises(ValueError, match="unknown model family"):
        make_model("tiny-2l", family="mixtral")
