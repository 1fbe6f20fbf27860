"""The run config's schema: one tree of typed dataclasses, each field with its doc, allowed values and range.

A config is ``Config`` (sections ``model``, ``data``, ``window``, ...), each section a dataclass whose fields carry
their doc, allowed values and range. ``load_config`` merges defaults ← ``base`` ← a TOML/JSON file ←
``--set section.key=value`` overrides, rejects unknown keys, wrong types and out-of-range values with one line
naming the key (``ConfigError``), and returns the ``Config``. ``describe`` renders the resolved config with each
key's doc (``mda-fast config show``). Checks that need the model or the data (heads within the model, probe length
within its context, a GPT-NeoX ``config.json``) are made by the stages before they start (``pipeline.validate``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..revisions import order_revisions
from .fields import TYPE_NAMES, check_value, opt, type_ok  # noqa: F401 (re-exported)

#: intervention arms (``mda_fast.study.interventions`` defines what each does)
ARMS = (
    "baseline",
    "delete-top",
    "delete-random",
    "augment-top",
    "augment-random",
    "delete-bottom",
    "delete-matched",
    "augment-matched",
)
DEFAULT_ARMS = ARMS[:5]
DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
#: model families (HF model_types) ``train.family`` builds a preset as (``mda_fast.train.presets.FAMILIES``)
TRAIN_FAMILIES = ("gpt_neox", "llama", "mistral", "qwen2", "qwen3", "olmo2", "gpt2")


@dataclass
class ModelSection:
    """The checkpoint to attribute."""

    name: str = opt(
        "", "HF hub name (e.g. EleutherAI/pythia-14m, read from the local HF cache) or a local HF directory"
    )
    revision: str = opt(
        "",
        "checkpoint to score at, e.g. step2000, stage1-step2000-tokens5B or main; empty: the revision of "
        "localize.revisions whose step is window.end_step, else step<window.end_step>",
    )
    run_dir: str = opt("", "instead of name: a mda-fast training run holding step<k>/ checkpoints")
    dtype: str = opt("float32", "parameter dtype of the loaded model", choices=DTYPE_NAMES)
    device: str = opt("auto", "auto (CUDA when available), cpu, cuda or cuda:N", kind="device")
    attn_implementation: str = opt("sdpa", "HF attention implementation", choices=("sdpa", "eager"))


@dataclass
class DataSection:
    """The training data in its training order: Pythia's (step k = rows k*batch .. ) or OLMo's (a seeded shuffle)."""

    format: str = opt(
        "pythia",
        "pythia: data.path is a Megatron prefix or .npy of rows in step order; olmo: OLMo's token files in OLMo's "
        "shuffled order (mda_fast.data.olmo, docs/olmo.md)",
        choices=("pythia", "olmo"),
    )
    path: str = opt(
        "",
        "pythia: Megatron prefix (document: .idx + .bin or 21 shards -000NN-of-00020.bin) or a .npy of rows; "
        "olmo: a text file listing the token files in the training config's data.paths order (one per line; "
        "'- ' items, # comments and gs:// / s3:// URLs, resolved under data.olmo_root, accepted)",
    )
    batch_size: int = opt(
        1024, "rows per training step (1024 in Pythia; OLMo's global_train_batch_size, 512 for OLMo-2 1B)", ge=1
    )
    seq_len: int = opt(
        2049, "tokens per row (2049 in Pythia: 2048 inputs + 1 shifted label; OLMo: max_sequence_length, 4096)", ge=2
    )
    tokenizer: str = opt("EleutherAI/gpt-neox-20b", "for text snippets: hub name, tokenizer.json path, or bytes")
    olmo_seed: int = opt(6198, "olmo: the order's seed (the run's data.seed, else its seed; 6198 for OLMo-2 1B)", ge=0)
    olmo_epoch: int = opt(
        0, "olmo: the epoch whose order is read (PCG64(seed + epoch)); steps count from its start", ge=0
    )
    olmo_dtype: str = opt(
        "uint32",
        "olmo: the token files' memmap_dtype (uint32 for OLMo-2, uint16 for OLMo-1)",
        choices=("uint8", "uint16", "uint32", "uint64"),
    )
    olmo_root: str = opt("", "olmo: where the list's URLs and relative paths are found; empty: the list file's folder")
    olmo_order_file: str = opt(
        "", "olmo: OLMo's train_data/global_indices.npy of that epoch (raw uint32), read instead of reshuffling"
    )


@dataclass
class WindowSection:
    """The training steps whose samples are scored."""

    start_step: int = opt(1000, "first step of the window", ge=0)
    end_step: int = opt(2000, "end of the window (exclusive)", ge=1)


@dataclass
class LocalizeSection:
    """Prefix-matching and previous-token scores of every head over checkpoints."""

    revisions: list = opt(
        [],
        "HF revisions to track, each carrying its step (step1000, OLMo-2's stage1-step1000-tokens3B; ordered by "
        "step, one training stage; not main); empty: a Pythia-like step<k> list up to the window end",
        kind="list[str]",
    )
    steps: list = opt([], "with model.run_dir: checkpoint steps; empty: every saved step<k>", kind="list[int]")
    seq_len: int = opt(32, "length L of the random block (rows are 2L tokens)", ge=2)
    n: int = opt(64, "number of repeated random sequences", ge=1)
    seed: int = opt(0, "seed of the random sequences")
    batch_size: int = opt(32, "sequences per forward pass", ge=1)
    threshold: float = opt(0.3, "score at which a head counts as formed (emergence step); above 1: never", ge=0.0)
    metric: str = opt("prefix_matching", "the score that defines emergence", choices=("prefix_matching", "prev_token"))
    low: int = opt(4, "lowest token id of the random sequences", ge=0)
    high: int = opt(0, "token ids below this (exclusive); 0: the vocabulary size (Pythia: its 50277 real tokens)", ge=0)

    def kwargs(self) -> dict:
        """Keyword arguments of ``mda_fast.core.localize.localize_all`` for this section."""
        kw = {k: getattr(self, k) for k in ("seq_len", "n", "seed", "batch_size", "low")}
        return {**kw, "high": self.high or None}


@dataclass
class TargetsSection:
    """The heads to attribute and their probes."""

    heads: Any = opt("auto", "auto (from localization at the window end) or [[layer, head], ...]", kind="heads")
    n_induction: int = opt(1, "auto: number of top prefix-matching heads", ge=1)
    n_control: int = opt(1, "auto: number of top previous-token heads that are not induction heads", ge=0)
    mode: str = opt("qkvo", "qk: block [W_Q|W_K]; qkvo: [W_Q|W_K], W_V, W_O", choices=("qk", "qkvo"))
    bias: bool = opt(False, "include the head's bias entries in its blocks")
    probes: list = opt(
        ["induction"], "probe objectives f (induction, prefix_matching, prev_token, registered ones)", kind="list[str]"
    )
    probe_L: int = opt(32, "probe length L (rows of 2L repeated random tokens; 2L within the model context)", ge=2)
    probe_n: int = opt(200, "number of probe sequences", ge=1)
    probe_seed: int = opt(0, "seed of the probe sequences")
    probe_low: int = opt(4, "lowest probe token id", ge=0)
    probe_high: int = opt(0, "probe token ids below this (exclusive); 0: the vocabulary (Pythia: 50277)", ge=0)
    text_probe_path: str = opt(
        "", "induction_text probe: the Megatron data set of its real-text rows; empty: data.path"
    )
    text_probe_rows: list = opt(
        [], "induction_text probe: global row indices of its rows; empty: the first text_probe_n rows", kind="list[int]"
    )
    text_probe_n: int = opt(16, "induction_text probe: number of rows when text_probe_rows is empty", ge=1)
    text_probe_length: int = opt(0, "induction_text probe: tokens of each row it reads; 0: the model's context", ge=0)
    probe_target: str = opt(
        "next",
        "induction target: next (correct) or authors (the reference code's objective term for term: logit row "
        "t-1, one position off, L terms plus those of tokens repeated in the first half; for comparison only)",
        choices=("next", "authors"),
    )


@dataclass
class FitSection:
    """The EK-FAC fit of each head's blocks."""

    n_sequences: int = opt(4096, "window sequences sampled for the fit", ge=1)
    batch_size: int = opt(8, "sequences per pass", ge=1)
    fisher: str = opt(
        "true", "true: labels drawn from the model; empirical: the data's labels", choices=("true", "empirical")
    )
    method: str = opt(
        "ekfac",
        "curvature: ekfac, kfac or identity (plain gradient dot products)",
        choices=("ekfac", "kfac", "identity"),
    )
    damping: float = opt(0.1, "damping as a multiple of the mean eigenvalue", gt=0.0)
    seed: int = opt(0, "seed of the sample choice and of the true-Fisher labels")


@dataclass
class ScoreSection:
    """Scoring every sequence of the window."""

    batch_size: int = opt(8, "sequences per scoring pass", ge=1)
    chunk: int = opt(1024, "sequences per resumable chunk written to disk", ge=1)
    backend: str = opt("", "kernel backend; empty: automatic", choices=("", "cuda", "triton", "cpu", "torch"))
    limit_steps: int = opt(0, "score only the first k steps of the window; 0: all", ge=0)
    tf32: bool = opt(True, "float32 models on a GPU: TF32 matmuls for the scoring passes (no effect on CPU)")


@dataclass
class AnalyzeSection:
    """Influence statistics."""

    top_frac: float = opt(0.1, "the top set: this fraction of the window (k = ceil(top_frac * n))", gt=0.0, lt=1.0)
    table_k: int = opt(50, "rows of the top-samples table", ge=1)
    snippet_tokens: int = opt(96, "tokens of text shown per top sample", ge=0)
    per_token_k: int = opt(
        20,
        "per-token influence (both decompositions) of the top and bottom k rows of each target, into "
        "out/per_token/ (loads the model and factors); 0: none",
        ge=0,
    )


@dataclass
class CategorizeSection:
    """Content categories for rows without a category sidecar (``mda-fast categorize``, and ``analyze`` when
    data.path has none): the top and bottom sets in full, the base rates from a seeded random sample."""

    auto: bool = opt(True, "analyze: categorize the rows first when data.path has no category sidecar")
    targets: str = opt(
        "primary",
        "whose top and bottom sets are classified: primary (the first target) or all targets",
        choices=("primary", "all"),
    )
    sample_rows: int = opt(
        7300,
        "rows of the window drawn at random (seeded) for the base rates; 7300 gives a 95% interval of about "
        "+-0.5 percentage points on a 5% category; 0: every row of the window",
        ge=0,
    )
    seed: int = opt(0, "seed of the random sample and of the bootstrap")
    chunk: int = opt(2048, "rows per resumable chunk written to disk", ge=1)
    workers: int = opt(0, "processes that classify rows; 0: every core", ge=0)
    bootstrap: int = opt(1000, "bootstrap resamples for each enrichment ratio's 95% interval", ge=10)


@dataclass
class ReportSection:
    """The HTML report."""

    title: str = opt("Mechanistic data attribution", "report title")


@dataclass
class CorpusSection:
    """Demo only: the synthetic corpus."""

    n_sequences: int = opt(0, "rows; 0: train.total_steps * data.batch_size + heldout_sequences", ge=0)
    seq_len: int = opt(129, "tokens per row", ge=2)
    seed: int = opt(0, "seed of every random stream of the generator")
    mix: dict = opt({}, "category -> share of rows; empty: the generator's default mix", kind="mix")
    heldout_sequences: int = opt(512, "rows after the training rows held out for evaluation", ge=0)
    packing: str = opt(
        "rows", "rows: one category per row; stream: documents packed the Pythia way", choices=("rows", "stream")
    )


@dataclass
class TrainSection:
    """Training a model from scratch (mda-fast train, demo, study, augment): its family, size and recipe."""

    family: str = opt(
        "gpt_neox",
        "model family (HF model_type) the preset is built as: gpt_neox (Pythia), llama (grouped-query: half as "
        "many key/value heads), mistral, qwen2 (q/k/v biases), qwen3 (per-head q/k norm), olmo2 (q/k norm over "
        "the width, norms after attention and MLP), gpt2 (learned positions, tied embeddings)",
        choices=TRAIN_FAMILIES,
    )
    preset: str = opt("tiny-2l", "model preset (mda_fast.train.presets): its sizes are the same in every family")
    total_steps: int = opt(2000, "the most steps trained (the corpus holds this many batches)", ge=1)
    schedule_steps: int = opt(10000, "length of the cosine LR schedule", ge=1)
    lr: float = opt(3e-3, "peak learning rate", gt=0.0)
    checkpoint_every: int = opt(100, "steps between checkpoints", ge=1)
    seed: int = opt(0, "seed of the initialisation")
    window_steps: int = opt(400, "the formation window: this many steps before the emergence checkpoint", ge=1)
    after_emergence: int = opt(
        300, "stop this many steps after a head reaches localize.threshold; -1: never stop", ge=-1
    )


@dataclass
class InterveneSection:
    """Retraining arms: delete or duplicate the top samples, against random and category-matched sets."""

    enabled: bool = opt(True, "demo: run the interventions")
    arms: list = opt(list(DEFAULT_ARMS), f"distinct arms including baseline, from {list(ARMS)}", kind="list[str]")
    seeds: list = opt([0], "seeds of the random arms (one run per seed)", kind="list[int]")
    top_frac: float = opt(
        0.1, "the intervened set: this fraction of the window (k = ceil(top_frac * n))", gt=0.0, lt=1.0
    )
    train_after: int = opt(300, "retrain this many steps past the window end", ge=0)
    eval_every: int = opt(50, "steps between head-score evaluations", ge=1)
    schedule_steps: int = opt(
        143000,
        "without model.run_dir (a HF checkpoint, no optimizer state): the length of the "
        "LR schedule it was trained with (Pythia: 143000 steps); AdamW restarts from "
        "zero moments at the window start (an approximation)",
        ge=1,
    )


@dataclass
class AugmentSection:
    """mda-fast augment: motifs of the top samples, synthetic data from them, and the cross-scale study."""

    sizes: list = opt(
        ["tiny-2l", "tiny-2l-w", "tiny-3l", "tiny-4l"],
        "model presets, or Hugging Face hub names (EleutherAI/pythia-14m: its published checkpoints, with data.path), "
        "smallest first (motifs are mined on the first; the transfer arm uses the last)",
        kind="list[str]",
    )
    arms: list = opt(
        ["none", "random", "copy", "top", "mechanistic"],
        "arms: none, random (duplicated random window "
        "rows), copy (random spans S||S), top (duplicated top-scored rows), mechanistic (motif "
        "generators)",
        kind="list[str]",
    )
    seeds: list = opt([0, 1, 2], "seeds of the seeded arms (random, copy, mechanistic)", kind="list[int]")
    budget_frac: float = opt(0.02, "synthetic rows per arm as a fraction of the window's tokens", gt=0.0, le=10.0)
    corpus: str = opt(
        "synthetic",
        "synthetic: the demo's embedded corpus (the corpus section's mix); real-text: the real-text study's corpus "
        "(study.sources, built as mda-fast study builds it; held-out loss on its held-out rows)",
        choices=("synthetic", "real-text"),
    )
    window_steps: int = opt(200, "the window: this many steps before the base run's emergence checkpoint", ge=1)
    train_after: int = opt(50, "arms train this many steps past the window end", ge=0)
    eval_every: int = opt(50, "steps between the arms' evaluations (window_steps must be a multiple)", ge=1)
    base_eval_every: int = opt(
        0,
        "steps between a base run's checkpoints / evaluations (a multiple of eval_every; window_steps a multiple of "
        "it); 0: eval_every. When coarser, the none arm is a branch from the window start evaluated every eval_every",
        ge=0,
    )
    top_frac: float = opt(
        0.05,
        "motifs are mined from this top fraction of the window (and as many bottom and random rows as contrast)",
        gt=0.0,
        lt=1.0,
    )
    n_motifs: int = opt(3, "at most this many motifs (k-means clusters of the top set)", ge=1)
    fresh_text: str = opt(
        "chain", "generated text between copies: chain (the motif's order-1 byte chain, copy share calibrated) or "
        "frequencies (bytes drawn from its byte frequencies: the generator before the real-text study)",
        choices=("chain", "frequencies"),
    )  # fmt: skip
    motif_seed: int = opt(0, "seed of the clustering and of the random contrast set")
    transfer: bool = opt(True, "also mine motifs on the largest size and apply them to it (arm mechanistic-large)")
    n_heldout: int = opt(64, "held-out rows for the ICL score, and as many prose rows for the held-out loss", ge=1)
    copy_span_min: int = opt(8, "copy baseline: shortest span S", ge=1)
    copy_span_max: int = opt(32, "copy baseline: longest span S", ge=1)
    copy_low: int = opt(0, "copy baseline: lowest token id; 0: localize.low (hub sizes: 4)", ge=0)
    copy_high: int = opt(
        0, "copy baseline: token ids below this; 0: localize.high or 131 (hub sizes: 50277, GPT-NeoX's real ids)", ge=0
    )
    schedule_steps: int = opt(
        143000,
        "hub sizes: the length of the LR schedule their checkpoints were trained with (Pythia: 143000); arms "
        "restart AdamW from zero moments at the window start (an approximation)",
        ge=1,
    )
    micro_batch_size: int = opt(0, "hub sizes: rows per gradient-accumulation chunk of an arm step; 0: one chunk", ge=0)
    workers: int = opt(0, "processes training the base runs, then the arm runs, side by side (torch on cores/workers "
                       "threads each); 0: every core; 1: in this process. Preset sizes, built-in generators", ge=0)  # fmt: skip
    llm_url: str = opt(
        "", "OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) writing generators; empty: built-in"
    )
    llm_model: str = opt("default", "model name sent to the endpoint")
    llm_key_env: str = opt("OPENAI_API_KEY", "environment variable holding the endpoint's API key (may be unset)")


@dataclass
class StudySection:
    """Study only (``mda-fast study``): the real-text corpus's sources and the study's own statistics."""

    sources: dict = opt({}, "source name (mda_fast.data.sources.SOURCES) -> the most bytes taken from it", kind="mix")
    max_file_bytes: int = opt(0, "leave out source files larger than this; 0: no limit", ge=0)
    shuffle_seed: int = opt(0, "seed of the row permutation (rows are shuffled after packing, as Pythia's are)")
    random_sets: int = opt(200, "random sets of the top set's size drawn for the spread of the enrichment ratios", ge=1)
    icl_rows: int = opt(64, "held-out rows for the real-text ICL score and induction probe at each checkpoint", ge=1)


SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "window": WindowSection,
    "localize": LocalizeSection,
    "targets": TargetsSection,
    "fit": FitSection,
    "score": ScoreSection,
    "analyze": AnalyzeSection,
    "categorize": CategorizeSection,
    "report": ReportSection,
    "corpus": CorpusSection,
    "train": TrainSection,
    "intervene": InterveneSection,
    "augment": AugmentSection,
    "study": StudySection,
}


@dataclass
class Config:
    """A whole run config. Sections are attributes; ``to_dict`` gives the plain nested dict."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    window: WindowSection = field(default_factory=WindowSection)
    localize: LocalizeSection = field(default_factory=LocalizeSection)
    targets: TargetsSection = field(default_factory=TargetsSection)
    fit: FitSection = field(default_factory=FitSection)
    score: ScoreSection = field(default_factory=ScoreSection)
    analyze: AnalyzeSection = field(default_factory=AnalyzeSection)
    categorize: CategorizeSection = field(default_factory=CategorizeSection)
    report: ReportSection = field(default_factory=ReportSection)
    corpus: CorpusSection = field(default_factory=CorpusSection)
    train: TrainSection = field(default_factory=TrainSection)
    intervene: InterveneSection = field(default_factory=InterveneSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    study: StudySection = field(default_factory=StudySection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def probe_kwargs(self, probe: str | None = None) -> dict:
        """Keyword arguments of probe ``probe`` (``get_probe(name, **kw)``); ``target`` goes to the induction probe only
        (the other probes have one target)."""
        t = self.targets
        kw = dict(L=t.probe_L, n=t.probe_n, seed=t.probe_seed, low=t.probe_low, high=t.probe_high or None)
        if probe == "induction":
            kw["target"] = t.probe_target
        if probe == "induction_text":
            kw = dict(
                path=t.text_probe_path or self.data.path,
                seq_len=self.data.seq_len,
                indices=list(t.text_probe_rows) or None,
                n=t.text_probe_n,
                length=t.text_probe_length,
                exclude=(0,),
            )
        return kw

    def validate(self) -> None:
        """Every per-key check and the checks between keys that need no model or data."""
        for sname, sec in sections(self):
            for f in dataclasses.fields(sec):
                key, v = f"{sname}.{f.name}", getattr(sec, f.name)
                check_value(key, v, f.metadata)
                check_key(key, v)
        w = self.window
        if not w.start_step < w.end_step:
            raise ConfigError(f"window: expected start_step < end_step, got {w.start_step}..{w.end_step}")
        for name, lo, hi in (
            ("localize", self.localize.low, self.localize.high),
            ("targets.probe", self.targets.probe_low, self.targets.probe_high),
        ):
            if hi and lo >= hi:
                key = f"{name}_low" if "." in name else f"{name}.low"
                raise ConfigError(f"{key}={lo} must be below its high end {hi} (the token range [low, high) is empty)")
        arms = self.intervene.arms
        if "baseline" not in arms or len(set(arms)) != len(arms):
            raise ConfigError(f"intervene.arms {arms!r}: expected distinct arms including 'baseline' from {list(ARMS)}")
        if self.data.format == "olmo" and "induction_text" in self.targets.probes and not self.targets.text_probe_path:
            raise ConfigError(
                "targets.text_probe_path is empty but data.format = 'olmo': the induction_text probe reads a "
                "Megatron data set; name one (e.g. a `mda-fast corpus` built with OLMo's tokenizer.json)"
            )
        if self.model.name and self.model.run_dir:
            raise ConfigError("model.name and model.run_dir are both set: give one (a HF model or a mda-fast run)")


def sections(cfg: Config):
    return [(f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)]


def check_key(key: str, v) -> None:
    """The checks of single keys beyond their field's type, choices and range."""
    if key == "localize.revisions":
        try:
            order_revisions(v)
        except ValueError as e:
            raise ConfigError(f"localize.revisions: {e}") from None
    if key in ("intervene.arms",):
        unknown = [a for a in v if a not in ARMS]
        if unknown:
            raise ConfigError(
                f"intervene.arms: unknown arm(s) {unknown}; expected distinct arms including "
                f"'baseline' from {list(ARMS)}"
            )
    if key in ("localize.steps",) and any(s < 0 for s in v):
        raise ConfigError(f"{key}: steps must be >= 0, got {v!r}")
