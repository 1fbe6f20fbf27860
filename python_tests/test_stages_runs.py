"""What the end-to-end commands share (``stages/runs.py``): the same-config check of a rerun on one ``--out``."""

import os

import pytest

from mda_fast.config import load_config
from mda_fast.errors import ConfigError
from mda_fast.io import write_json
from mda_fast.stages.runs import config_differences, refuse_other_config


def test_config_differences_names_nested_keys():
    a = {"train": {"lr": 1e-3, "seed": 0}, "corpus": {"mix": {"a": 1}}}
    b = {"train": {"lr": 2e-3, "seed": 0}, "corpus": {"mix": {"a": 2}}}
    assert config_differences(a, b) == ["corpus.mix: {'a': 1} -> {'a': 2}", "train.lr: 0.001 -> 0.002"]
    assert config_differences(a, a) == []


def test_a_key_added_later_with_its_default_is_no_difference():
    old = {"augment": {"seeds": [0]}}
    new = {"augment": {"seeds": [0], "micro_batch_size": 0}}
    defaults = {"augment": {"seeds": [0, 1, 2], "micro_batch_size": 0}}
    assert config_differences(old, new, defaults=defaults) == []
    # without defaults, or with a non-default value, it is one
    assert config_differences(old, new) == ["augment.micro_batch_size: None -> 0"]
    new["augment"]["micro_batch_size"] = 4
    assert config_differences(old, new, defaults=defaults) == ["augment.micro_batch_size: None -> 4"]
    # a key removed from the current config is always a difference
    assert config_differences(new, old, defaults=defaults) == ["augment.micro_batch_size: 4 -> None"]


def test_refuse_other_config(tmp_path):
    cfg = load_config(None, ["train.lr=0.001"])
    refuse_other_config(str(tmp_path), "state.json", cfg, "a run")  # nothing recorded yet
    d = cfg.to_dict()
    del d["augment"]["micro_batch_size"]  # written by a version without the key: still the same config
    write_json(str(tmp_path / "state.json"), {"config": d})
    refuse_other_config(str(tmp_path), "state.json", cfg, "a run")
    other = load_config(None, ["train.lr=0.002"])
    with pytest.raises(ConfigError, match=r"holds a run made with another config \(train\.lr: 0\.001 -> 0\.002\)"):
        refuse_other_config(str(tmp_path), "state.json", other, "a run")


def test_every_summary_records_the_environment_it_ran_in(tmp_path, monkeypatch):
    """summary.json carries the versions and torch's thread count (figures such as first crossings move with it)."""
    import json

    import torch

    from mda_fast.stages.runs import Stages, finish
    from mda_fast.version import environment

    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    s = finish(str(tmp_path), {"findings": []}, Stages(), str(tmp_path / "report.html"))
    got = json.loads((tmp_path / "summary.json").read_text())["environment"]
    assert got == s["environment"] == environment() and got["torch_threads"] == 3
    assert {"mda_fast", "torch", "transformers", "numpy", "python", "torch_interop_threads", "cpu_count"} <= set(got)


def test_the_environment_names_the_source_commit_and_the_cpu_kernels(tmp_path, monkeypatch):
    """The commit of the source tree (a result can be traced to its code) and the CPU with torch's SIMD level (the
    kernels set the order of floating-point sums, like the thread count)."""
    import re
    import subprocess

    import torch

    from mda_fast import version

    env = version.environment()
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] is None or isinstance(env["cpu"], str)
    root = os.path.dirname(os.path.dirname(os.path.abspath(version.__file__)))
    if os.path.exists(os.path.join(root, ".git")):
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", env["mda_fast_commit"]) and env["mda_fast_commit"][:40] == head
    # a tree that is no git checkout (an installed wheel): no commit, no error
    monkeypatch.setattr(version.os.path, "exists", lambda p: False)
    version.source_commit.cache_clear()
    try:
        assert version.source_commit() is None
    finally:
        version.source_commit.cache_clear()
