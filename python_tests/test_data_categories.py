"""The category sidecar format (mda_fast.data.categories): round trip, validation, the synthetic corpus's."""

import json

import numpy as np
import pytest

from mda_fast.data import load_category_sidecar, write_category_sidecar
from mda_fast.data.categories import sidecar_paths


def test_round_trip_and_paths(tmp_path):
    prefix = str(tmp_path / "corpus")
    fr = np.random.default_rng(0).dirichlet(np.ones(3), size=10).astype(np.float32)
    paths = write_category_sidecar(prefix, fr, ["code", "prose", "math"], seq_len=129, source="test")
    assert paths == [prefix + ".categories.npy", prefix + ".categories.json"]
    assert sidecar_paths(prefix + ".bin") == sidecar_paths(prefix + ".idx") == tuple(paths)
    got, names = load_category_sidecar(prefix + ".bin")
    np.testing.assert_array_equal(got, fr)
    assert got.dtype == np.float32 and names == ["code", "prose", "math"]
    meta = json.load(open(paths[1]))
    assert meta == {"categories": ["code", "prose", "math"], "seq_len": 129, "source": "test", "n_rows": 10}


def test_absent_and_bad_sidecars(tmp_path):
    prefix = str(tmp_path / "c")
    assert load_category_sidecar(prefix) is None
    with pytest.raises(ValueError, match=r"\[n_rows, 2\]"):
        write_category_sidecar(prefix, np.zeros((4, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        write_category_sidecar(prefix, np.zeros((4, 2)), ["a", "a"])
    with pytest.raises(ValueError, match="n_rows=5"):
        write_category_sidecar(prefix, np.zeros((4, 2)), ["a", "b"], n_rows=5)
    np.save(prefix + ".categories.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(FileNotFoundError, match="metadata"):
        load_category_sidecar(prefix)
    json.dump({"categories": ["a", "b"], "n_rows": 3}, open(prefix + ".categories.json", "w"))
    with pytest.raises(ValueError, match="disagrees"):
        load_category_sidecar(prefix)


def test_synthetic_corpus_writes_the_format(tmp_path):
    from mda_fast.data.synthetic import CATEGORIES, SyntheticConfig, generate_corpus

    prefix = str(tmp_path / "s")
    info = generate_corpus(prefix, SyntheticConfig(n_sequences=6, seq_len=33, seed=1), progress=False)
    fr, names = load_category_sidecar(prefix)
    assert names == CATEGORIES and fr.shape == (6, len(CATEGORIES))
    np.testing.assert_allclose(fr.sum(axis=1), 1.0, rtol=1e-6)
    meta = json.load(open(prefix + ".categories.json"))
    assert list(meta)[:3] == ["categories", "seq_len", "n_rows"] and meta["n_rows"] == 6
    assert prefix + ".categories.npy" in info["paths"] and prefix + ".categories.json" in info["paths"]


def test_real_data_path_does_not_load_the_generator():
    import subprocess
    import sys

    code = (
        "import sys, mda_fast.study.analyze, mda_fast.study.report, mda_fast.study.interventions, "
        "mda_fast.data.categories; print('mda_fast.data.synthetic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
