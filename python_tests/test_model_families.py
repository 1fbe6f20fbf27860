"""Loading and validating every family: ``load_model`` / ``read_model_config`` on Llama, OLMo-2 and GPT-2 checkpoint
directories written by hand in the Hugging Face format (config.json + model.safetensors), the refusal of the
unsupported kinds (ALiBi, mixture-of-experts, soft-capping) with the supported families named, the config checks
against each family's own config keys, hub revision names (OLMo-2's ``stage1-step1000-tokens3B``, ``main``) in a
fake local HF cache, and ``mda-fast train --set train.family=llama``.

Where the Llama / GPT-2 layout adapters are not registered (before ``adapters/llama.py`` and ``adapters/gpt2.py``
are merged), a config-only stand-in is registered for the test: it reads the shape with HF's standard config
attribute names (which HF maps to GPT-2's ``n_head``, ``n_positions``, ...). Once the real adapters are
registered, the same assertions check theirs.
"""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mda_fast.adapters import ModelAdapter, ModelShape, register_adapter, registered_model_types, unregister_adapter
from mda_fast.cli import main
from mda_fast.config import load_config
from mda_fast.core.model import UNSUPPORTED_FAMILIES, hub_checkpoint_dir, load_model, read_model_config
from mda_fast.data import write_megatron
from mda_fast.errors import ConfigError, MdaFastError, ModelError
from mda_fast.revisions import order_revisions, revision_for_step, revision_step, run_dir_steps
from mda_fast.stages.checks import validate
from mda_fast.stages.inputs import checkpoint_ref, hf_checkpoint_dir
from mda_fast.stages.localize import localize_checkpoints

torch.set_num_threads(1)


class ConfigOnlyAdapter(ModelAdapter):
    """Stands in for a layout adapter not merged yet: shape and loading only (no heads, no attention)."""

    modules = ("q_proj",)
    qkv_module = "q_proj"

    def __init__(self, model_type: str):
        self.model_type = model_type
        self.family = f"{model_type} (test stand-in)"

    def check(self, model) -> None:
        if getattr(getattr(model, "config", None), "model_type", None) != self.model_type:
            raise TypeError(f"expected a {self.model_type} model")

    def config_shape(self, config) -> ModelShape:
        heads = config.num_attention_heads
        return ModelShape(
            n_layers=config.num_hidden_layers,
            n_heads=heads,
            d_model=config.hidden_size,
            d_head=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rotary_ndims=0,
            rotary_base=0.0,
            vocab_size=config.vocab_size,
            max_positions=config.max_position_embeddings,
            model_type=self.model_type,
        )

    def config_class(self):
        from transformers import AutoConfig

        return AutoConfig

    def model_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def backbone(self, model):
        return getattr(model, "model", None) or getattr(model, "transformer", None)

    def layers(self, model):
        b = self.backbone(model)
        return b.layers if hasattr(b, "layers") else b.h

    def attention_module(self, model, layer, module):
        raise NotImplementedError

    def head_parts(self, shape, head, mode):
        raise NotImplementedError

    def split_qkv(self, qkv, shape, heads=None):
        raise NotImplementedError

    def rotate_qk(self, q, k, shape):
        raise NotImplementedError


FAMS = ("llama", "olmo2", "gpt2")


@pytest.fixture(scope="module", autouse=True)
def families():
    added = [t for t in FAMS if t not in registered_model_types()]
    for t in added:
        register_adapter(ConfigOnlyAdapter(t))
    yield
    for t in added:
        unregister_adapter(t)


# ---- checkpoints written by hand in the HF format ---------------------------------------------------------------
D, H, KV, L, V, F = 32, 4, 2, 2, 50, 64
DH = D // H


def hf_files(family: str, seed: int = 0, ctx: int = 48) -> tuple[dict, dict]:
    """``(config.json dict, {tensor name: tensor})`` of a tiny checkpoint, named as the hub's files are."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    t = {}
    if family == "gpt2":  # the hub's gpt2 files carry no "transformer." prefix
        cfg = {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": D,
            "n_layer": L,
            "n_head": H,
            "n_positions": ctx,
            "n_inner": None,
            "vocab_size": V,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True,
        }
        t["wte.weight"], t["wpe.weight"] = r(V, D), r(ctx, D)
        for i in range(L):
            p = f"h.{i}."
            for ln in ("ln_1", "ln_2"):
                t[p + ln + ".weight"], t[p + ln + ".bias"] = 1 + r(D), r(D)
            t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"] = r(D, 3 * D), r(3 * D)  # Conv1D: [in, out]
            t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = r(D, D), r(D)
            t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = r(D, 4 * D), r(4 * D)
            t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = r(4 * D, D), r(D)
        t["ln_f.weight"], t["ln_f.bias"] = 1 + r(D), r(D)
        return cfg, t
    cfg = {
        "architectures": ["LlamaForCausalLM" if family == "llama" else "Olmo2ForCausalLM"],
        "model_type": family,
        "hidden_size": D,
        "intermediate_size": F,
        "num_hidden_layers": L,
        "num_attention_heads": H,
        "num_key_value_heads": KV,
        "max_position_embeddings": ctx,
        "vocab_size": V,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "attention_bias": False,
        "tie_word_embeddings": False,
    }
    t["model.embed_tokens.weight"] = r(V, D)
    for i in range(L):
        p = f"model.layers.{i}."
        norms = ("input_layernorm", "post_attention_layernorm")
        if family == "olmo2":  # norms after attention and MLP; q/k norms over the projection width
            norms = ("post_attention_layernorm", "post_feedforward_layernorm")
            t[p + "self_attn.q_norm.weight"], t[p + "self_attn.k_norm.weight"] = 1 + r(H * DH), 1 + r(KV * DH)
        for n in norms:
            t[p + n + ".weight"] = 1 + r(D)
        t[p + "self_attn.q_proj.weight"] = r(H * DH, D)
        t[p + "self_attn.k_proj.weight"] = r(KV * DH, D)
        t[p + "self_attn.v_proj.weight"] = r(KV * DH, D)
        t[p + "self_attn.o_proj.weight"] = r(D, H * DH)
        t[p + "mlp.gate_proj.weight"], t[p + "mlp.up_proj.weight"] = r(F, D), r(F, D)
        t[p + "mlp.down_proj.weight"] = r(D, F)
    t["model.norm.weight"] = 1 + r(D)
    t["lm_head.weight"] = r(V, D)
    return cfg, t


def write_hf(path, family: str, seed: int = 0, ctx: int = 48) -> dict:
    os.makedirs(path, exist_ok=True)
    cfg, tensors = hf_files(family, seed, ctx)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return tensors


def err(fn, *a, **k) -> str:
    with pytest.raises(MdaFastError) as e:
        fn(*a, **k)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("family", FAMS)
def test_load_model_reads_every_tensor_of_a_hand_written_checkpoint(tmp_path, family):
    tensors = write_hf(tmp_path / "ck", family, seed=1)
    model = load_model(str(tmp_path / "ck"))
    assert model.config.model_type == family and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    sd = model.state_dict()
    for name, t in tensors.items():
        key = ("transformer." + name) if family == "gpt2" else name
        assert torch.equal(sd[key], t), name
    if family == "gpt2":
        assert torch.equal(sd["lm_head.weight"], tensors["wte.weight"])  # tied
    s = read_model_config(str(tmp_path / "ck"))
    assert (s.n_layers, s.n_heads, s.d_model, s.vocab_size, s.max_positions, s.model_type) == (L, H, D, V, 48, family)


@pytest.mark.parametrize("family", FAMS)
def test_a_missing_or_misshapen_tensor_is_one_model_error(tmp_path, family):
    tensors = write_hf(tmp_path / "ck", family)
    drop = next(k for k in tensors if "layers.1.self_attn.k_proj" in k or "h.1.attn.c_attn.weight" in k)
    save_file({k: v for k, v in tensors.items() if k != drop}, str(tmp_path / "ck" / "model.safetensors"))
    msg = err(load_model, str(tmp_path / "ck"))
    assert msg.startswith(f"the weights of {str(tmp_path / 'ck')!r} lack 1 of the model's tensors (first: ")
    bad = dict(tensors)
    bad[drop] = bad[drop][:-1]
    save_file(bad, str(tmp_path / "ck" / "model.safetensors"))
    assert err(load_model, str(tmp_path / "ck")).startswith(
        f"the weights of {str(tmp_path / 'ck')!r} do not match its config.json: 1 tensors differ"
    )


@pytest.mark.parametrize("model_type", ["bloom", "mpt", "mixtral", "olmoe", "gemma2", "mllama"])
def test_unsupported_kinds_are_refused_naming_the_supported_families(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    why = UNSUPPORTED_FAMILIES[model_type]
    for fn in (read_model_config, load_model):
        msg = err(fn, str(tmp_path))
        assert msg.startswith(f"{tmp_path / 'config.json'} has model_type {model_type!r} ({why}, ")
        assert "; expected one of the supported families: " in msg and "'gpt_neox' (Pythia / GPT-NeoX)" in msg
        assert all(repr(t) in msg for t in registered_model_types())
    cfg = load_config(overrides=[f'model.name="{tmp_path}"', "localize.seq_len=4"])
    with pytest.raises(ModelError, match=f"model_type {model_type!r}"):
        validate("localize", cfg, str(tmp_path / "out"))


# ---- the config checks read each family's own keys --------------------------------------------------------------
@pytest.mark.parametrize("family,ctx", [("llama", 40), ("olmo2", 40), ("gpt2", 24)])
def test_checks_use_the_family_heads_context_and_vocabulary(tmp_path, family, ctx):
    """max_position_embeddings (Llama, OLMo-2) or n_positions (GPT-2), num_attention_heads or n_head, vocab_size."""
    write_hf(tmp_path / "ck", family, ctx=ctx)
    ok = [f'model.name="{tmp_path / "ck"}"', "localize.seq_len=4", f"targets.probe_L={ctx // 2}"]
    facts = validate("localize", load_config(overrides=ok), str(tmp_path / "out"))
    assert (facts.model_config.n_heads, facts.model_config.max_positions) == (H, ctx)
    for extra, want in [
        ([f"targets.probe_L={ctx // 2 + 1}"], f"rows of 2L = {ctx + 2} tokens exceed the model's context of {ctx}"),
        ([f"localize.seq_len={ctx // 2 + 1}"], "localize.seq_len"),
        (["targets.heads=[[0, 4]]"], f"out of range for a model with {L} layers and {H} heads"),
        ([f"targets.probe_high={V + 1}"], f"exceeds the model's vocabulary size {V}"),
        ([f"localize.high={V + 1}"], f"exceeds the model's vocabulary size {V}"),
    ]:
        with pytest.raises(ConfigError, match=want):
            validate("localize", load_config(overrides=ok + extra), str(tmp_path / "out"))


# ---- revision names ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,step",
    [
        ("step0", 0),
        ("step1000", 1000),
        ("stage1-step1000-tokens3B", 1000),
        ("stage2-ingredient1-step11931-tokens50B", 11931),
    ],
)
def test_revision_step(name, step):
    assert revision_step(name) == step


@pytest.mark.parametrize("name", ["main", "stepx", "mystep100", "step", "3f2a9c", "step-100", ""])
def test_revision_without_a_step_is_one_line(name):
    with pytest.raises(ValueError, match=f"revision {name!r} names no training step; expected a name carrying step<k>"):
        revision_step(name)


def test_order_revisions():
    revs = ["stage1-step3000-tokens7B", "stage1-step1000-tokens3B", "stage1-step2000-tokens5B"]
    assert order_revisions(revs) == [
        (1000, "stage1-step1000-tokens3B"),
        (2000, "stage1-step2000-tokens5B"),
        (3000, "stage1-step3000-tokens7B"),
    ]
    assert order_revisions(["step10", "step2", "step2"]) == [(2, "step2"), (10, "step10")]
    with pytest.raises(ValueError, match="different training stages"):
        order_revisions(["stage1-step1000-tokens3B", "stage2-ingredient1-step1000-tokens5B"])
    with pytest.raises(ValueError, match="both name step 1000"):
        order_revisions(["step1000", "step1000-unsharded"])
    with pytest.raises(ValueError, match="'main' names no training step"):
        order_revisions(["step1", "main"])
    assert revision_for_step(revs, 2000) == "stage1-step2000-tokens5B"
    assert revision_for_step(revs, 4000) == "step4000" and revision_for_step([], 7) == "step7"


def test_run_dir_steps(tmp_path):
    for d in ("step0", "step10", "step2", "step3.tmp", "stepx", "other"):
        (tmp_path / d).mkdir()
    (tmp_path / "step5").write_text("a file")
    assert run_dir_steps(str(tmp_path)) == [0, 2, 10] and run_dir_steps(str(tmp_path / "nope")) == []


@pytest.mark.parametrize(
    "revs,want",
    [
        ('["main"]', "localize.revisions: revision 'main' names no training step"),
        ('["stage1-step1000-tokens3B", "stage2-ingredient1-step1000-tokens5B"]', "different training stages"),
        ('["step1000", "step1000-unsharded"]', "both name step 1000"),
    ],
)
def test_localize_revisions_are_checked_when_the_config_loads(revs, want):
    with pytest.raises(ConfigError, match=want):
        load_config(overrides=[f"localize.revisions={revs}"])


OLMO = "allenai/OLMo-2-0425-1B"
OLMO_REVS = {"stage1-step1000-tokens3B": 1, "stage1-step2000-tokens5B": 2, "stage1-step3000-tokens7B": 3, "main": 4}


@pytest.fixture
def olmo_cache(tmp_path, monkeypatch):
    """A fake local HF cache of OLMo-2 with stage-1 revisions and main (a tiny OLMo-2 checkpoint each)."""
    import huggingface_hub.constants as hc

    repo = tmp_path / "hub" / ("models--" + OLMO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    tensors = {}
    for rev, seed in OLMO_REVS.items():
        h = f"{seed:040d}"
        tensors[rev] = write_hf(str(repo / "snapshots" / h), "olmo2", seed=seed)
        (repo / "refs" / rev).write_text(h)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return repo, tensors


def test_olmo_revisions_from_the_cache(olmo_cache):
    repo, tensors = olmo_cache
    for rev, seed in OLMO_REVS.items():
        assert hub_checkpoint_dir(OLMO, rev) == str(repo / "snapshots" / f"{seed:040d}")
        assert read_model_config(OLMO, revision=rev).model_type == "olmo2"
    model = load_model(OLMO, revision="main")
    w = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(model.state_dict()[w], tensors["main"][w])
    assert not torch.equal(model.state_dict()[w], tensors["stage1-step1000-tokens3B"][w])
    msg = err(hub_checkpoint_dir, OLMO, "stage1-step9000-tokens19B", " (the window start)")
    assert msg.startswith(f"model {OLMO!r} at revision 'stage1-step9000-tokens19B' (the window start) is not in")
    assert msg.endswith(f"hf download {OLMO} --revision stage1-step9000-tokens19B")


def test_localize_and_the_stages_find_olmo_revisions_by_step(olmo_cache, tmp_path):
    repo, _ = olmo_cache
    revs = '["stage1-step3000-tokens7B", "stage1-step1000-tokens3B", "stage1-step2000-tokens5B"]'
    base = [f'model.name="{OLMO}"', f"localize.revisions={revs}", "window.start_step=1000", "window.end_step=2000"]
    cfg = load_config(overrides=base)
    assert localize_checkpoints(cfg) == [
        (1000, OLMO, "stage1-step1000-tokens3B"),
        (2000, OLMO, "stage1-step2000-tokens5B"),
        (3000, OLMO, "stage1-step3000-tokens7B"),
    ]
    assert checkpoint_ref(cfg) == (OLMO, "stage1-step2000-tokens5B")  # the window end, by its step
    assert hf_checkpoint_dir(cfg, 1000) == str(repo / "snapshots" / f"{1:040d}")  # the window start (intervene)
    assert checkpoint_ref(load_config(overrides=base + ['model.revision="main"'])) == (OLMO, "main")
    facts = validate("localize", load_config(overrides=base + ["localize.seq_len=4", "targets.probe_L=4"]), "x")
    assert facts.model_config.model_type == "olmo2"


# ---- mda-fast train on another family ---------------------------------------------------------------------------
@pytest.fixture
def byte_data(tmp_path):
    rng = np.random.default_rng(0)
    write_megatron(str(tmp_path / "toy"), rng.integers(4, 200, size=(8 * 6, 17)), dtype=np.uint16)
    return str(tmp_path / "toy")


def _train_args(out, data, *extra):
    sets = [
        f'data.path="{data}"',
        "data.batch_size=8",
        "data.seq_len=17",
        "train.family=llama",
        "train.total_steps=4",
        "train.schedule_steps=10",
        "train.checkpoint_every=2",
        "localize.seq_len=4",
        "localize.n=4",
        "model.device=cpu",
        *extra,
    ]
    return ["train", "--out", out, "--no-progress"] + sum([["--set", s] for s in sets], [])


def test_mda_fast_train_a_llama(tmp_path, byte_data, capsys):
    """Training needs no adapter with the emergence monitor off; with it on, the family must have one."""
    import mda_fast.adapters as adapters

    out = str(tmp_path / "out")
    served = "llama" in registered_model_types()
    if served and isinstance(adapters.adapter_for_type("llama"), ConfigOnlyAdapter):
        unregister_adapter("llama")  # the stand-in cannot localize: train as if no adapter served llama
    try:
        if "llama" not in registered_model_types():
            assert main(_train_args(out, byte_data)) == 2
            err_line = capsys.readouterr().err.strip().splitlines()[-1]
            assert "train.family = 'llama': no model adapter serves it" in err_line
            assert "train.after_emergence = -1" in err_line
            assert not os.path.exists(os.path.join(out, "run"))
            assert main(_train_args(out, byte_data, "train.after_emergence=-1")) == 0
        else:  # the real Llama adapter is merged: the monitor scores the Llama's heads
            assert main(_train_args(out, byte_data)) == 0
            from mda_fast.train import read_jsonl

            evals = read_jsonl(os.path.join(out, "run", "eval.jsonl"))
            assert [r["step"] for r in evals] == [0, 1, 2, 4] and len(evals[-1]["prefix_matching"]) == 2
    finally:
        if "llama" not in registered_model_types():
            register_adapter(ConfigOnlyAdapter("llama"))
    run = os.path.join(out, "run")
    assert run_dir_steps(run) == [0, 1, 2, 4]  # every 2 steps and Pythia's log-spaced early ones
    cfg = json.load(open(os.path.join(run, "step4", "config.json")))
    assert cfg["model_type"] == "llama" and cfg["num_key_value_heads"] == 2 and cfg["num_attention_heads"] == 4
    state = torch.load(os.path.join(run, "step4", "trainer_state.pt"), weights_only=True)
    assert state["config"]["family"] == "llama" and state["step"] == 4


def test_demo_refuses_a_family_without_an_adapter(tmp_path):
    """The demo scores heads: a family no adapter serves is one ConfigError before any work."""
    from mda_fast.train import FAMILIES

    unserved = [f for f in FAMILIES if f not in registered_model_types()]
    if not unserved:
        pytest.skip("an adapter serves every training family")
    cfg = load_config(overrides=[f"train.family={unserved[0]}"])
    with pytest.raises(ConfigError, match=f"train.family = '{unserved[0]}': no model adapter serves it"):
        validate("demo", cfg, str(tmp_path / "out"))


def test_the_olmo2_config_loads_and_names_its_revisions_by_step():
    from mda_fast.config import packaged_config
    from mda_fast.stages.inputs import hub_revision

    cfg = load_config(packaged_config("olmo2-1b-induction"))
    assert cfg.model.name == "allenai/OLMo-2-0425-1B"
    steps = [k for k, _ in order_revisions(cfg.localize.revisions)]
    assert steps == list(range(1000, 10001, 1000))
    assert checkpoint_ref(cfg) == (cfg.model.name, "stage1-step2000-tokens5B")
    assert revision_step(cfg.model.revision) == cfg.window.end_step
    assert hub_revision(cfg, cfg.window.start_step) == "stage1-step1000-tokens3B"
    assert cfg.data.seq_len - 1 <= 4096 and cfg.data.batch_size == 512
    assert cfg.score.limit_steps * cfg.data.batch_size == 25_600  # the sequences its cost estimate counts
