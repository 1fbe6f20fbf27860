"""The CLI against a table of bad inputs: each exits 2 with one line naming the offending key or file, prints no
traceback, and leaves no new output behind (a fresh --out is not created; an existing one is left as it was).

The world is tiny and real: a Megatron data set, a mda-fast-style run directory of GPT-NeoX checkpoints
``step<k>/`` (HF ``save_pretrained``), and a finished fit + score + analyze in ``done/`` for the cases about
what an output directory holds.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, make_tiny

from mda_fast.cli import main
from mda_fast.io import OutputLock

B, S, STEPS = 4, 17, 10


def _toml(d: dict) -> str:
    lines = []
    for sec, kv in d.items():
        lines.append(f"[{sec}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in kv.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mda_fast.data import write_megatron

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    write_megatron(str(root / "data" / "document"), rng.integers(0, 64, size=(B * STEPS, S)).astype(np.uint16))
    run = root / "run"
    for step in (0, 5, 10):
        make_tiny(
            n_layers=2, d_model=32, n_heads=4, vocab=64, ctx=64, attn="sdpa", dtype=torch.float32, seed=step
        ).save_pretrained(str(run / f"step{step}"))
    base = {
        "model": {"run_dir": str(run), "device": "cpu"},
        "data": {"path": str(root / "data" / "document"), "batch_size": B, "seq_len": S, "tokenizer": "bytes"},
        "window": {"start_step": 5, "end_step": 10},
        "localize": {"seq_len": 8, "n": 4, "batch_size": 4, "low": 4, "high": 60},
        "targets": {"heads": [[1, 2]], "probe_L": 8, "probe_n": 4, "probe_low": 4, "probe_high": 60},
        "fit": {"n_sequences": 8, "batch_size": 4},
        "score": {"batch_size": 4, "chunk": 8},
        "analyze": {"table_k": 4, "snippet_tokens": 8},
    }
    cfg = root / "base.toml"
    cfg.write_text(_toml(base))
    done = str(root / "done")
    for cmd in ("fit", "score", "analyze"):
        assert main([cmd, "--config", str(cfg), "--out", done, "--no-progress"]) == 0, cmd
    bloom = root / "bloom"  # an unsupported family (ALiBi)
    from transformers import BloomConfig

    BloomConfig(n_layer=1, hidden_size=8, n_head=2, vocab_size=16).save_pretrained(str(bloom))
    return {"root": root, "cfg": str(cfg), "base": base, "done": done, "run": str(run), "bloom": str(bloom)}


def _tree(path):
    if not os.path.exists(path):
        return None
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            p = os.path.join(d, f)
            st = os.stat(p)
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns)
    return out


def _copy_done(w, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(w["done"], out)
    return out


def _write_cfg(w, tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


def _set(*items):
    return sum((["--set", s] for s in items), [])


def partial_scores_of(cmd):
    """An output directory whose scoring stopped half way."""

    def f(w, tmp):
        out = _copy_done(w, tmp)
        prog = os.path.join(out, "score", "progress.json")
        p = json.load(open(prog))
        p["n_done"] = 8
        json.dump(p, open(prog, "w"))
        return ["--config", w["cfg"]], out

    return f


# (id, command, extra args or a function (world, tmp_path) -> (args, out), words the message must contain)
# With a plain list, --config is the world's base config and --out a fresh directory.
def _cases():
    c = []

    def plain(cid, cmd, extra, words):
        c.append((cid, cmd, extra, words))

    # config keys: unknown, wrong type, bad value, out of range
    plain("unknown-section", "fit", _set("modle.name=x"), ["modle"])
    plain("unknown-key", "fit", _set("model.nmae=x"), ["model.nmae"])
    plain("wrong-type", "fit", _set('window.end_step="x"'), ["window.end_step", "int"])
    plain("bool-for-int", "score", _set("score.batch_size=true"), ["score.batch_size"])
    plain("metric", "localize", _set("localize.metric=bogus"), ["localize.metric", "prefix_matching"])
    plain("fisher", "fit", _set("fit.fisher=bogus"), ["fit.fisher", "empirical"])
    plain("method", "fit", _set("fit.method=newton"), ["fit.method"])
    plain("mode", "fit", _set("targets.mode=qkv"), ["targets.mode", "qkvo"])
    plain("backend", "score", _set("score.backend=gpu"), ["score.backend", "triton"])
    plain("score-batch-negative", "score", _set("score.batch_size=-4"), ["score.batch_size", ">= 1"])
    plain("score-chunk-zero", "score", _set("score.chunk=0"), ["score.chunk"])
    plain("fit-batch-zero", "fit", _set("fit.batch_size=0"), ["fit.batch_size"])
    plain("fit-n-zero", "fit", _set("fit.n_sequences=0"), ["fit.n_sequences"])
    plain("data-batch-zero", "fit", _set("data.batch_size=0"), ["data.batch_size"])
    plain("localize-batch-zero", "localize", _set("localize.batch_size=0"), ["localize.batch_size"])
    plain("damping-zero", "fit", _set("fit.damping=0"), ["fit.damping"])
    plain("damping-nan", "fit", _set("fit.damping=nan"), ["fit.damping"])
    plain("top-frac", "analyze", _set("analyze.top_frac=1.5"), ["analyze.top_frac"])
    plain("dtype", "fit", _set("model.dtype=float8"), ["model.dtype"])
    plain("probe-target", "score", _set("targets.probe_target=previous"), ["targets.probe_target", "authors"])
    plain("arms", "intervene", _set('intervene.arms=["baseline", "delete-everything"]'), ["intervene.arms"])
    plain("heads-malformed", "fit", _set("targets.heads=[[0]]"), ["targets.heads"])
    plain("revision-form", "localize", _set('localize.revisions=["main"]'), ["localize.revisions", "step<k>"])
    plain("set-syntax", "fit", ["--set", "window"], ["--set", "section.key=value"])
    plain("window-order", "fit", _set("window.start_step=9", "window.end_step=9"), ["window", "start_step"])
    plain("name-and-run-dir", "fit", _set("model.name=EleutherAI/pythia-14m"), ["model.name", "model.run_dir"])
    # values checked against the model and the data
    plain("probe-L-context", "fit", _set("targets.probe_L=40"), ["targets.probe_L", "context of 64"])
    plain("localize-L-context", "localize", _set("localize.seq_len=33"), ["localize.seq_len", "context"])
    plain("probe-high-vocab", "score", _set("targets.probe_high=65"), ["targets.probe_high", "vocabulary"])
    plain("localize-high-vocab", "localize", _set("localize.high=100"), ["localize.high", "vocabulary"])
    plain("probe-range-empty", "fit", _set("targets.probe_low=50", "targets.probe_high=10"), ["targets.probe_low"])
    plain("head-range", "fit", _set("targets.heads=[[0, 9]]"), ["targets.heads", "out of range"])
    plain("probe-unknown", "fit", _set('targets.probes=["induktion"]'), ["targets.probes", "induktion"])
    plain("device-cuda", "fit", _set("model.device=cuda"), ["model.device", "cuda"])
    plain("device-name", "fit", _set("model.device=tpu"), ["model.device"])
    plain("intervene-cuda", "intervene", _set("model.device=cuda:1"), ["model.device"])
    plain("window-beyond-data", "fit", _set("window.end_step=100"), ["window.end_step", "beyond the data"])
    plain("run-dir-missing", "fit", _set('model.run_dir="/nonexistent/run"'), ["model.run_dir", "/nonexistent/run"])
    plain("run-dir-no-step", "fit", _set("window.start_step=1", "window.end_step=7"), ["step7"])
    plain("data-missing", "fit", _set('data.path="/nonexistent/document"'), ["data.path", "/nonexistent/document"])
    plain("shard-index", "score", ["--shard", "5/3"], ["--shard", "0 <= I < K"])
    plain("shard-too-many", "score", ["--shard", "0/100"], ["cannot split a window"])
    plain("score-before-fit", "score", [], ["targets.json", "mda-fast fit"])
    plain("analyze-before-score", "analyze", [], ["score", "mda-fast score"])
    plain("report-nothing", "report", [], ["analysis.json", "analyze"])
    plain("categorize-before-score", "categorize", [], ["score", "mda-fast score"])
    plain("categorize-sample-negative", "categorize", _set("categorize.sample_rows=-1"), ["categorize.sample_rows"])
    plain("categorize-targets", "categorize", _set('categorize.targets="some"'), ["categorize.targets", "primary"])
    plain("categorize-bootstrap", "categorize", _set("categorize.bootstrap=1"), ["categorize.bootstrap", ">= 10"])
    plain("categorize-no-data", "categorize", _set('data.path="/nonexistent/document"'), ["data.path"])

    def categorize_no_tokenizer(w, tmp):
        out = _copy_done(w, tmp)
        return ["--config", w["cfg"], "--set", 'data.tokenizer="/nonexistent/tokenizer.json"'], out

    c.append(("categorize-no-tokenizer", "categorize", categorize_no_tokenizer, ["data.tokenizer", "tokenizer.json"]))
    c.append(("categorize-partial-scores", "categorize", partial_scores_of("categorize"), ["incomplete", "--resume"]))

    def bloom(w, tmp):
        return ["--config", w["cfg"], "--set", f'model.name="{w["bloom"]}"', "--set", 'model.run_dir=""'], None

    c.append(("unsupported-family-directory", "localize", bloom, ["model_type", "bloom", "GPT-NeoX"]))

    def offline(w, tmp):
        return [
            "--config",
            "pythia-14m-induction",
            "--set",
            f'data.path="{w["base"]["data"]["path"]}"',
            "--set",
            "data.batch_size=4",
            "--set",
            "data.seq_len=17",
            "--set",
            "window.start_step=0",
            "--set",
            "window.end_step=2",
        ], None

    c.append(("hub-offline", "fit", offline, ["EleutherAI/pythia-14m", "Hugging Face cache", "hf download"]))

    def local_dir_revisions(w, tmp):
        return [
            "--config",
            w["cfg"],
            "--set",
            f'model.name="{w["run"]}/step10"',
            "--set",
            'model.run_dir=""',
            "--set",
            'localize.revisions=["step1", "step2"]',
        ], None

    c.append(("local-dir-revisions", "localize", local_dir_revisions, ["localize.revisions", "local directory"]))

    def config_dir(w, tmp):
        return ["--config", str(tmp)], None

    c.append(("config-directory", "fit", config_dir, ["--config", "is a directory"]))

    def config_missing(w, tmp):
        return ["--config", str(tmp / "missing.toml")], None

    c.append(("config-missing", "fit", config_missing, ["config file not found", "missing.toml"]))

    def config_bad_toml(w, tmp):
        return ["--config", _write_cfg(w, tmp, "[model\nname = 1\n")], None

    c.append(("config-bad-toml", "fit", config_bad_toml, ["invalid TOML", "c.toml"]))

    def config_packaged_unknown(w, tmp):
        return ["--config", "pythia-99m-induction"], None

    c.append(("config-unknown-name", "fit", config_packaged_unknown, ["pythia-99m-induction", "available"]))

    def out_is_file(w, tmp):
        f = tmp / "afile"
        f.write_text("x")
        return ["--config", w["cfg"]], str(f)

    c.append(("out-is-file", "fit", out_is_file, ["--out", "is a file"]))

    def out_under_file(w, tmp):
        f = tmp / "afile"
        f.write_text("x")
        return ["--config", w["cfg"]], str(f / "sub")

    c.append(("out-under-file", "fit", out_under_file, ["afile", "is a file"]))

    def resume_after_refit(w, tmp):
        out = _copy_done(w, tmp)
        prog = os.path.join(out, "score", "progress.json")
        p = json.load(open(prog))
        p["n_done"] = 8  # an interrupted run ...
        json.dump(p, open(prog, "w"))
        assert main(["fit", "--config", w["cfg"], "--out", out, "--no-progress", "--set", "fit.seed=1"]) == 0
        return ["--config", w["cfg"], "--resume"], out  # ... resumed after a refit with other factors

    c.append(("resume-after-refit", "score", resume_after_refit, ["--resume", "other factors", "fresh --out"]))

    def resume_other_batch(w, tmp):
        out = _copy_done(w, tmp)
        prog = os.path.join(out, "score", "progress.json")
        p = json.load(open(prog))
        p["n_done"] = 8
        json.dump(p, open(prog, "w"))
        return ["--config", w["cfg"], "--resume", "--set", "score.batch_size=2"], out

    c.append(("resume-other-setting", "score", resume_other_batch, ["--resume", "fingerprint"]))

    def partial_scores(cmd):
        def f(w, tmp):
            out = _copy_done(w, tmp)
            prog = os.path.join(out, "score", "progress.json")
            p = json.load(open(prog))
            p["n_done"] = 8
            json.dump(p, open(prog, "w"))
            return ["--config", w["cfg"]], out

        return f

    c.append(("analyze-partial", "analyze", partial_scores("analyze"), ["incomplete", "--resume"]))
    c.append(("intervene-partial", "intervene", partial_scores("intervene"), ["incomplete", "--resume"]))

    def deleted_scores(w, tmp):
        out = _copy_done(w, tmp)
        os.remove(os.path.join(out, "score", "scores.npy"))
        return ["--config", w["cfg"]], out

    c.append(("deleted-scores", "analyze", deleted_scores, ["scores.npy", "missing"]))

    def damaged_factors(how):
        def f(w, tmp):
            out = _copy_done(w, tmp)
            p = os.path.join(out, "factors", "factors.safetensors")
            if how == "truncated":
                data = open(p, "rb").read()
                open(p, "wb").write(data[: len(data) // 2])
            elif how == "garbage":
                open(p, "wb").write(b"\x00garbage" * 10)
            else:
                open(os.path.join(out, "factors", "factors.json"), "w").write("{not json")
            return ["--config", w["cfg"]], out

        return f

    for how in ("truncated", "garbage", "json"):
        c.append((f"factors-{how}", "score", damaged_factors(how), ["factors"]))

    def missing_weights(w, tmp):
        run = tmp / "run"
        shutil.copytree(w["run"], run)
        for f in os.listdir(run / "step10"):
            if f.endswith((".safetensors", ".bin")):
                os.remove(run / "step10" / f)
        return ["--config", w["cfg"], "--set", f'model.run_dir="{run}"'], None

    c.append(("missing-weights", "fit", missing_weights, ["step10"]))

    def nan_weights(w, tmp):
        run = tmp / "run"
        shutil.copytree(w["run"], run)
        from transformers import GPTNeoXForCausalLM

        m = GPTNeoXForCausalLM.from_pretrained(str(run / "step10"))
        with torch.no_grad():
            m.gpt_neox.layers[0].mlp.dense_h_to_4h.weight[0, 0] = float("nan")
        m.save_pretrained(str(run / "step10"))
        return ["--config", w["cfg"], "--set", f'model.run_dir="{run}"'], None

    c.append(("nan-weights-fit", "fit", nan_weights, ["NaN"]))

    def demo_changed_corpus(w, tmp):
        from mda_fast.config import load_config, packaged_config
        from mda_fast.io import write_json

        out = str(tmp / "demo")
        os.makedirs(out)
        write_json(os.path.join(out, "demo.json"), {"config": load_config(packaged_config("demo")).to_dict()})
        return ["--set", "corpus.seed=1"], out

    c.append(("demo-other-corpus", "demo", demo_changed_corpus, ["corpus.seed", "fresh --out"]))
    plain("demo-packing", "demo", _set('corpus.packing="docs"'), ["corpus.packing"])
    plain("demo-preset", "demo", _set('train.preset="tiny-99l"'), ["train.preset"])
    c.extend(_corpus_cases())
    return c


def _pile_line(i, **drop):
    """One line of the Pile's JSON lines (``{"text", "meta": {"pile_set_name"}}``), without the fields in ``drop``."""
    rec = {"text": f"document {i}: " + "the quick brown fox. " * 20, "meta": {"pile_set_name": "Pile-CC"}}
    if drop.get("text"):
        del rec["text"]
    if drop.get("label"):
        del rec["meta"]["pile_set_name"]
    return json.dumps(rec).encode() + b"\n"


def _corpus_file(tmp, name, lines, compress=None):
    data = b"".join(lines)
    if compress == "zstd":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    elif compress == "gzip":
        import gzip

        data = gzip.compress(data)
    p = tmp / name
    p.write_bytes(data)
    return str(p)


def _corpus_cases():
    """``mda-fast corpus --from`` on the corpus formats people have (the Pile's .jsonl.zst, Dolma's .json.gz,
    Parquet, save_to_disk), each bad input one line naming the file and line; --out's parent does not exist and
    must be gone again afterwards."""

    def case(cid, make, words, extra=()):
        def f(w, tmp):
            pytest.importorskip("zstandard")
            pytest.importorskip("pyarrow")
            return ["--from", *make(tmp), "--seq-len", "16", *extra], str(tmp / "new-dir" / "doc")

        return (cid, "corpus", f, words)

    pile = "00.jsonl.zst"
    lab = ("--category-field", "meta.pile_set_name")
    out = [
        case(
            "corpus-pile-malformed-line",
            lambda t: [_corpus_file(t, pile, [_pile_line(1), _pile_line(2), b'{"text": "x",\n'], "zstd")],
            [pile, "line 3", "not valid JSON", "one JSON object a line"],
        ),
        case(
            "corpus-pile-missing-text",
            lambda t: [_corpus_file(t, pile, [_pile_line(1), _pile_line(2, text=True)], "zstd")],
            [pile, "line 2", "no text field", "--text-field"],
        ),
        case(
            "corpus-pile-missing-category",
            lambda t: [_corpus_file(t, pile, [_pile_line(1), _pile_line(2), _pile_line(3, label=True)], "zstd")],
            [pile, "line 3", "no meta.pile_set_name field"],
            lab,
        ),
        case(
            "corpus-dolma-not-utf8",
            lambda t: [
                _corpus_file(
                    t,
                    "part-0000.json.gz",
                    [
                        json.dumps(
                            {"id": "a", "text": "ok " * 30, "source": "c4", "added": "", "created": "", "metadata": {}}
                        ).encode()
                        + b"\n",
                        b'{"id": "b", "text": "caf\xe9", "source": "c4", "added": "", "created": "", "metadata": {}}\n',
                    ],
                    "gzip",
                )
            ],
            ["part-0000.json.gz", "line 2", "not UTF-8", "0xe9"],
            ("--category-field", "source"),
        ),
        case("corpus-empty-file", lambda t: [_corpus_file(t, "empty.jsonl", [])], ["empty.jsonl", "no documents"]),
        case("corpus-empty-zst", lambda t: [_corpus_file(t, pile, [], "zstd")], [pile, "no documents", "empty"]),
        case(
            "corpus-truncated-zst",
            lambda t: [_truncated(_corpus_file(t, pile, [_pile_line(i) for i in range(200)], "zstd"))],
            [pile, "cannot decompress"],
        ),
        case(
            "corpus-parquet-missing-column",
            lambda t: [_parquet(t, {"content": ["a b c " * 10] * 3})],
            ["a.parquet", "no column 'text'", "content"],
        ),
        case(
            "corpus-parquet-null-text",
            lambda t: [_parquet(t, {"text": ["a b c " * 10, "d e f " * 10, None]})],
            ["a.parquet", "row 2", "text is null"],
        ),
        case("corpus-not-parquet", lambda t: [_garbage(t, "b.parquet")], ["b.parquet", "not a readable Parquet"]),
        case("corpus-dataset-dict", lambda t: [_dataset_dict(t)], ["DatasetDict", "train", "one split's directory"]),
        case(
            "corpus-mixed-inputs",
            lambda t: [_corpus_file(t, pile, [_pile_line(1)], "zstd"), str(t)],
            ["mixes document files"],
        ),
    ]
    return out


def _truncated(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def _garbage(tmp, name):
    (tmp / name).write_bytes(b"PAR1 this is not parquet")
    return str(tmp / name)


def _parquet(tmp, columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), str(tmp / "a.parquet"))
    return str(tmp / "a.parquet")


def _dataset_dict(tmp):
    d = tmp / "saved"
    (d / "train").mkdir(parents=True)
    (d / "train" / "state.json").write_text('{"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}')
    (d / "train" / "dataset_info.json").write_text("{}")
    (d / "dataset_dict.json").write_text('{"splits": ["train"]}')
    return str(d)


CASES = _cases()


@pytest.mark.parametrize("cid,cmd,extra,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, capsys, monkeypatch, cid, cmd, extra, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("MDA_FAST_DEBUG", raising=False)
    if callable(extra):
        args, out = extra(world, tmp_path)
    else:
        args, out = (["--config", world["cfg"]] if cmd != "demo" else []) + extra, None
    out = out or str(tmp_path / "fresh-out")
    watch = os.path.dirname(out) if cmd == "corpus" else out  # corpus: --out is a prefix; its directory is new
    capsys.readouterr()
    before = _tree(watch)
    rc = main([cmd] + args + ["--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, (cid, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"mda-fast {cmd}: error: "), (cid, err)
    for w in words:
        assert w in lines[0], (cid, w, lines[0])
    assert "Traceback" not in err
    assert _tree(watch) == before, (cid, "output changed", before, _tree(watch))
    print(f"\nCASE {cid} | mda-fast {cmd} | {lines[0]}")  # the table of messages: pytest -s -k test_bad_input


def test_fit_on_fewer_sequences_than_asked_says_so(world, tmp_path, capsys):
    """fit.n_sequences = 100000 on a window of 20 sequences fits on the 20 and says so: one warning line on stderr,
    requested and used in factors.json and targets.json, and a line of the findings; the config is not changed."""
    from mda_fast.study.findings import findings, findings_text

    out = str(tmp_path / "o")
    capsys.readouterr()
    args = ["fit", "--config", world["cfg"], "--out", out, "--no-progress", "--set", "fit.n_sequences=100000"]
    assert main(args) == 0
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "fit.n_sequences = 100000" in err[0] and "window holds 20 sequences" in err[0], err
    meta = json.load(open(os.path.join(out, "factors", "factors.json")))
    assert meta["n_sequences_requested"] == 100000 and meta["n_sequences_used"] == meta["n_sequences"] == 20
    targets = json.load(open(os.path.join(out, "targets.json")))
    assert targets["fit_sample"] == {"requested": 100000, "used": 20, "window": 20}
    res = json.load(open(os.path.join(world["done"], "analyze", "analysis.json")))
    text = findings_text(findings(res, targets))
    assert "The factors were fitted on all 20 window sequences; fit.n_sequences asked for 100000." in text
    # a fit within the window: no warning, no such finding
    assert main(args[:-2] + ["--set", "fit.n_sequences=8"]) == 0
    assert capsys.readouterr().err.strip() == ""
    targets = json.load(open(os.path.join(out, "targets.json")))
    assert not any("asked for" in x for x in findings_text(findings(res, targets)))


def test_table_is_long_enough():
    assert len(CASES) >= 40


def test_second_command_on_a_locked_out(world, tmp_path, capsys):
    out = _copy_done(world, tmp_path)
    before = _tree(out)
    with OutputLock(out):
        assert main(["score", "--config", world["cfg"], "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "in use by another mda-fast command" in err and "Traceback" not in err
    after = _tree(out)
    assert after == before


@pytest.mark.parametrize("code,word", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk(world, tmp_path, capsys, monkeypatch, code, word):
    """A write that fails with ENOSPC / EROFS (simulated: root ignores permissions) is one line, and the
    half-written stage is removed."""
    import mda_fast.io as O

    out = str(tmp_path / "out")
    real = O.json.dump

    def failing(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(O.json, "dump", failing)
    try:
        assert main(["localize", "--config", world["cfg"], "--out", out, "--no-progress"]) == 2
    finally:
        monkeypatch.setattr(O.json, "dump", real)
    err = capsys.readouterr().err
    assert word in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(out)


def test_ctrl_c_during_score_says_how_to_resume(world, tmp_path, capsys, monkeypatch):
    from mda_fast.core.influence import InfluenceScorer

    out = str(tmp_path / "out")
    for f in ("targets.json",):
        os.makedirs(out, exist_ok=True)
        shutil.copy(os.path.join(world["done"], f), out)
    shutil.copytree(os.path.join(world["done"], "factors"), os.path.join(out, "factors"))
    real, calls = InfluenceScorer.score, {"n": 0}

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(InfluenceScorer, "score", interrupted)
    assert main(["score", "--config", world["cfg"], "--out", out, "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "mda-fast score --resume" in err and "Traceback" not in err
    monkeypatch.setattr(InfluenceScorer, "score", real)
    assert main(["score", "--resume", "--config", world["cfg"], "--out", out, "--no-progress"]) == 0
    np.testing.assert_array_equal(
        np.load(os.path.join(out, "score", "scores.npy")), np.load(os.path.join(world["done"], "score", "scores.npy"))
    )


def test_two_fits_then_resume_is_refused_but_a_fresh_score_is_consistent(world, tmp_path):
    """The resume fingerprint covers the factors: after a refit, a fresh score run (no --resume) is accepted and
    gives the new factors' scores."""
    out = _copy_done(world, tmp_path)
    assert main(["fit", "--config", world["cfg"], "--out", out, "--no-progress", "--set", "fit.seed=1"]) == 0
    assert main(["score", "--config", world["cfg"], "--out", out, "--no-progress"]) == 0
    a = np.load(os.path.join(out, "score", "scores.npy"))
    b = np.load(os.path.join(world["done"], "score", "scores.npy"))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_no_traceback_from_a_real_process(world, tmp_path):
    """The console entry point itself: exit code 2, one line on stderr, no traceback."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
    env.pop("MDA_FAST_DEBUG", None)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mda_fast.cli",
            "score",
            "--config",
            world["cfg"],
            "--out",
            str(tmp_path / "o"),
            "--set",
            "score.batch_size=-4",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=120,
    )
    assert r.returncode == 2 and "score.batch_size" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "o")


def test_config_show_prints_every_key_with_its_doc(capsys):
    import dataclasses

    from mda_fast.config import Config

    assert main(["config", "show", "--config", "demo", "--set", "score.batch_size=3"]) == 0
    text = capsys.readouterr().out
    assert "batch_size = 3  # sequences per scoring pass" in text
    for sec in dataclasses.fields(Config):
        assert f"[{sec.name}]" in text
        for f in dataclasses.fields(sec.type if isinstance(sec.type, type) else type(getattr(Config(), sec.name))):
            assert f"\n{f.name} = " in text, f.name
    assert main(["config", "show", "--set", "fit.fisher=x"]) == 2


def test_localize_of_one_local_directory_is_one_checkpoint(world, tmp_path, capsys):
    """A local model directory has no revisions: localize scores it once instead of inventing a history."""
    out = str(tmp_path / "o")
    args = [
        "localize",
        "--config",
        world["cfg"],
        "--out",
        out,
        "--no-progress",
        "--set",
        f'model.name="{world["run"]}/step10"',
        "--set",
        'model.run_dir=""',
    ]
    assert main(args) == 0
    loc = json.load(open(os.path.join(out, "localize", "localize.json")))
    assert loc["steps"] == [10] and loc["single_checkpoint"] is True and len(loc["checkpoints"]) == 1
    assert "one checkpoint" in capsys.readouterr().out
    # a run directory gives the real history
    out2 = str(tmp_path / "o2")
    assert main(["localize", "--config", world["cfg"], "--out", out2, "--no-progress"]) == 0
    loc2 = json.load(open(os.path.join(out2, "localize", "localize.json")))
    assert loc2["steps"] == [0, 5, 10] and loc2["single_checkpoint"] is False


def test_a_failed_stage_keeps_the_previous_result(world, tmp_path):
    """localize builds its directory beside the old one: a failure (NaN weights at one checkpoint) leaves the
    previous localize/ byte for byte."""
    from transformers import GPTNeoXForCausalLM

    run = tmp_path / "run"
    shutil.copytree(world["run"], run)
    out = str(tmp_path / "o")
    base = ["localize", "--config", world["cfg"], "--out", out, "--no-progress", "--set", f'model.run_dir="{run}"']
    assert main(base) == 0
    before = _tree(out)
    m = GPTNeoXForCausalLM.from_pretrained(str(run / "step5"))
    with torch.no_grad():
        m.gpt_neox.embed_in.weight[3, 0] = float("inf")
    m.save_pretrained(str(run / "step5"))
    assert main(base) == 2
    assert _tree(out) == before


def test_top_fraction_is_reported_as_set_and_sized_once(world, tmp_path, capsys):
    """analyze.top_frac = 0.05 is reported as the top 5% (``top_share`` beside ``top_fraction``), and the analysis
    and the interventions size the top set the same way (ceil)."""
    from mda_fast.study.interventions import InterventionConfig
    from mda_fast.study.stats import top_count

    out = _copy_done(world, tmp_path)
    assert (
        main(["analyze", "--config", world["cfg"], "--out", out, "--no-progress", "--set", "analyze.top_frac=0.05"])
        == 0
    )
    text = capsys.readouterr().out
    assert "The top 5% of window sequences" in text and "10%" not in text.split("(the paper")[0]
    a = json.load(open(os.path.join(out, "analyze", "analysis.json")))
    assert a["top_fraction"] == 0.05 and "top_share" in a and "top10_share" not in a
    assert a["k_top"] == top_count(20, 0.05) == 1
    for n_steps, bs, frac in ((14, 1, 0.1), (3, 5, 0.1), (12, 3, 0.05), (40, 1, 0.1), (7, 1, 0.5)):
        ic = InterventionConfig(
            run_dir="x",
            data=world["base"]["data"]["path"],
            batch_size=bs,
            seq_len=S,
            start_step=0,
            end_step=n_steps,
            train_until=n_steps,
            heads=[(0, 0)],
            out_dir="x",
            top_frac=frac,
        )
        assert ic.k == top_count(n_steps * bs, frac), (n_steps, bs, frac)
    assert top_count(14, 0.1) == 2  # ceil(1.4): round-half-up would give 1


def test_intervene_trains_on_the_configured_device(world, tmp_path, monkeypatch):
    """``model.device`` reaches the retraining (it used to keep the checkpoint's device)."""
    import mda_fast.study.interventions as I
    from mda_fast.config import load_config
    from mda_fast.stages.intervene import run_intervene

    seen = {}

    def fake(icfg, scores, gi, progress=True):
        seen["device"] = icfg.device
        return {}

    monkeypatch.setattr(I, "run_interventions", fake)
    out = _copy_done(world, tmp_path)
    cfg = load_config(
        world["cfg"], ["model.device=cpu", "window.end_step=8", "corpus.heldout_sequences=4", "intervene.train_after=0"]
    )
    run_intervene(cfg, out, progress=False)
    assert seen["device"] == "cpu"
