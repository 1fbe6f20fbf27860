"""Byte tokenizer round trip and the GPT-NeoX-20B tokenizer (skipped where its json is absent)."""

import os

import numpy as np
import pytest

from mda_fast.data import ByteTokenizer, get_decoder, get_tokenizer, load_tokenizer

NEOX = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "gpt-neox-20b-tokenizer.json"
)
needs_neox = pytest.mark.skipif(not os.path.isfile(NEOX), reason=f"GPT-NeoX-20B tokenizer not found at {NEOX}")


def test_byte_round_trip():
    tok = ByteTokenizer()
    assert tok.vocab_size == 260 and tok.eod_id == 0 and tok.pad_id == 1
    rng = np.random.default_rng(0)
    for text in ["", "Hello world", "héllo → 世界 🙂", "a\x00b\n\t", "".join(map(chr, rng.integers(32, 0x3000, 200)))]:
        ids = tok.encode(text)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, np.frombuffer(text.encode(), np.uint8).astype(np.int64) + 4)
        assert tok.decode(ids) == text
    np.testing.assert_array_equal(tok.encode("A"), [ord("A") + 4])
    np.testing.assert_array_equal(tok.encode("ab", append_eod=True), [ord("a") + 4, ord("b") + 4, 0])


def test_byte_decode_specials_and_invalid_utf8():
    tok = ByteTokenizer()
    assert tok.decode([ord("a") + 4, 0, ord("b") + 4, 1, 2, 3]) == "a<|eod|>b<|pad|><|reserved2|><|reserved3|>"
    assert tok.decode(np.array([0xFF + 4, ord("x") + 4], dtype=np.uint16)) == "\ufffdx"
    # a multi-byte character split by EOD is replaced, not merged across the marker
    e = tok.encode("é")
    assert tok.decode([e[0], 0, e[1]]) == "\ufffd<|eod|>\ufffd"
    with pytest.raises(ValueError, match="260"):
        tok.decode([260])
    with pytest.raises(ValueError):
        tok.decode([-1])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    assert get_decoder("bytes")([ord("z") + 4]) == "z"


@needs_neox
def test_neox_tokenizer():
    tok = load_tokenizer(NEOX)
    assert tok.id_to_token(0) == "<|endoftext|>" and tok.eod_id == 0
    assert tok.vocab_size == 50277
    ids = tok.encode("Hello world")
    np.testing.assert_array_equal(ids, [12092, 1533])
    assert tok.decode(ids) == "Hello world"
    assert tok.decode(np.array([12092, 1533, 0], dtype=np.uint16)) == "Hello world<|endoftext|>"
    assert get_decoder(NEOX)(ids) == "Hello world"
    assert get_tokenizer(NEOX).encode("Hello world", append_eod=True)[-1] == 0


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_tokenizer(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a valid tokenizer"):
        load_tokenizer(str(bad))


def test_load_tokenizer_hub_failure_is_clear(monkeypatch):
    """A hub name goes to Tokenizer.from_pretrained; a failure (no network here) becomes a clear ValueError."""
    import tokenizers

    calls = []

    def boom(name, *a, **k):
        calls.append(name)
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", staticmethod(boom))
    with pytest.raises(
        ValueError, match="could not load tokenizer 'EleutherAI/gpt-neox-20b' from the Hugging Face hub"
    ):
        load_tokenizer("EleutherAI/gpt-neox-20b")
    assert calls == ["EleutherAI/gpt-neox-20b"]
