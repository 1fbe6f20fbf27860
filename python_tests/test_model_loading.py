"""load_pythia / read_model_config: the config is read and checked before any model is built, and every bad
checkpoint (not GPT-NeoX, no weights, damaged weights, missing tensors, not cached offline) is one ModelError."""

import json
import os
import re
import time

import pytest
import torch
from conftest import make_tiny
from safetensors.torch import load_file, save_file

from mda_fast import ModelError, load_pythia
from mda_fast.core.model import neox_shape, read_model_config

torch.set_num_threads(1)


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if a model would be built."""
    import transformers

    def refuse(*a, **k):
        pytest.fail("a model was built before the config was checked")

    monkeypatch.setattr(transformers.GPTNeoXForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.GPTNeoXForCausalLM, "__init__", refuse)


@pytest.fixture
def saved_tiny(tmp_path):
    model = make_tiny(n_layers=2, d_model=16, n_heads=2, dtype=torch.float32, seed=3)
    d = tmp_path / "ckpt"
    model.save_pretrained(str(d))
    return model, d


def err(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_tiny_checkpoint_round_trip_and_config_shape(saved_tiny):
    model, d = saved_tiny
    back = load_pythia(str(d))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert not any(p.requires_grad for p in back.parameters())
    assert read_model_config(str(d)) == neox_shape(model)
    assert read_model_config(str(d)).n_heads == 2 and read_model_config(str(d)).max_positions == 64


def test_gpt2_directory_is_refused_fast_without_building(tmp_path, no_build):
    from transformers import GPT2Config

    GPT2Config().save_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")  # weights are never looked at
    t0 = time.perf_counter()
    for fn in (load_pythia, read_model_config):
        msg = err(fn, str(tmp_path))
        assert msg == (
            f"{tmp_path / 'config.json'} has model_type 'gpt2'; expected 'gpt_neox' or 'llama' or 'mistral' or 'olmo' or 'olmo2' "
            "or 'qwen2' or 'qwen3' "
            "(mda-fast supports Pythia / GPT-NeoX / Llama / Mistral / Qwen2 / Qwen3 / OLMo / OLMo-2 checkpoints only)"
        )
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("weights", ["model.safetensors"])
def test_directory_without_weight_file(saved_tiny, weights, no_build):
    _, d = saved_tiny
    os.remove(d / weights)
    for fn in (load_pythia, read_model_config):
        msg = err(fn, str(d))
        assert msg.startswith(
            f"model directory {str(d)!r} has config.json but no weight file; expected one of "
            "model.safetensors, model.safetensors.index.json, pytorch_model.bin"
        )


def test_sharded_index_with_a_missing_shard(saved_tiny, no_build):
    _, d = saved_tiny
    os.remove(d / "model.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    (d / "model-00001-of-00002.safetensors").write_bytes(b"")
    msg = err(load_pythia, str(d))
    assert msg.startswith(
        f"model directory {str(d)!r} lacks 1 of the 2 weight shards listed in "
        "model.safetensors.index.json (first: model-00002-of-00002.safetensors)"
    )


def test_directory_without_config_or_with_broken_config(tmp_path, no_build):
    msg = err(load_pythia, str(tmp_path))
    assert msg.startswith(f"model directory {str(tmp_path)!r} has no config.json")
    (tmp_path / "config.json").write_text('{"model_type": "gpt_ne')
    assert err(read_model_config, str(tmp_path)).startswith(f"{tmp_path / 'config.json'} is not readable JSON (")


def test_damaged_weight_file(saved_tiny):
    _, d = saved_tiny
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    msg = err(load_pythia, str(d))
    assert msg.startswith(f"cannot load the weights of {str(d)!r} (SafetensorError: ")
    assert msg.endswith("expected weights that match its config.json (the checkpoint is damaged or mixed up)")


def test_weight_file_missing_a_tensor_is_not_randomly_initialised(saved_tiny):
    _, d = saved_tiny
    w = d / "model.safetensors"
    tensors = load_file(str(w))
    key = next(k for k in tensors if k.endswith("layers.1.attention.query_key_value.weight"))
    del tensors[key]
    save_file(tensors, str(w), metadata={"format": "pt"})
    msg = err(load_pythia, str(d))
    assert msg.startswith(f"the weights of {str(d)!r} lack 1 of the model's tensors (first: ")
    assert "layers.1.attention.query_key_value.weight" in msg


def test_paths_that_do_not_exist_or_are_files(tmp_path, no_build):
    assert err(load_pythia, str(tmp_path / "nope")).startswith(
        f"model directory {str(tmp_path / 'nope')!r} does not exist"
    )
    (tmp_path / "f.bin").write_bytes(b"x")
    assert err(read_model_config, str(tmp_path / "f.bin")).startswith(
        f"model path {str(tmp_path / 'f.bin')!r} is a file"
    )
    assert err(read_model_config, "bad id with spaces").startswith(
        "model 'bad id with spaces' is neither a local directory nor a valid Hugging Face model id"
    )


def test_hub_model_not_in_the_cache_offline(tmp_path, monkeypatch, no_build):
    """HF_HUB_OFFLINE=1 and an empty HF_HOME: no network is tried, and the error says how to get the model."""
    import huggingface_hub.constants as hc

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(home / "hub"))
    for fn in (load_pythia, read_model_config):
        msg = err(fn, "EleutherAI/pythia-14m", revision="step2000")
        assert msg.startswith(
            "model 'EleutherAI/pythia-14m' at revision 'step2000' is not in the local Hugging Face "
            f"cache ({home / 'hub'}) and could not be downloaded ("
        )
        assert "`hf download EleutherAI/pythia-14m --revision step2000`" in msg and "HF_HUB_OFFLINE=1" in msg


def test_config_the_weights_do_not_fit_or_that_is_invalid(saved_tiny, capsys):
    _, d = saved_tiny
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] = 32  # the saved weights are 16 wide
    cfg_path.write_text(json.dumps(cfg))
    msg = err(load_pythia, str(d))
    assert msg.startswith(f"the weights of {str(d)!r} do not match its config.json: ")
    m = re.search(r"\(first: [\w.]+ is \[([0-9, ]+)\] in the checkpoint, \[([0-9, ]+)\] per config\.json\)", msg)
    assert m and "16" in m.group(1).split(", ") and "32" in m.group(2).split(", "), msg
    assert "LOAD REPORT" not in capsys.readouterr().err  # no transformers table before the one-line error
    cfg["num_attention_heads"] = 3  # 32 is not a multiple of 3
    cfg_path.write_text(json.dumps(cfg))
    assert err(read_model_config, str(d)).startswith(f"{cfg_path} is not a valid GPT-NeoX config (")
