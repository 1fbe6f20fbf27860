"""The category of a piece of text from its content alone (no file name): the one content classifier of the package.

Both the file classifier (:func:`mda_fast.data.classify.classify`, for files whose name says nothing) and the row
classifier (:mod:`mda_fast.data.row_categories`, for the document pieces of token rows) call
:func:`classify_text`. Categories: :data:`CATEGORIES` (the table in :mod:`mda_fast.data.content_rules`).

How: the rules (:mod:`mda_fast.data.content_rules`: regular-expression counts, then a decision list) decide first;
where they are sure (:data:`SURE_RULES`: too short, text that parses as JSON, pieces made of UUIDs, digests or
base64, timestamped log lines; symbols with no structure (``other``); hex where whole hex tokens of no digest length
make nearly all of the piece; config syntax no other category has, :data:`SURE_CONFIG`) their decision stands. Everything else goes to the learned model
(:mod:`mda_fast.data.content_model`: logistic regression over hashed byte 1–4-grams and the rules' features and
decision, trained on the training half of the labelled set, :mod:`mda_fast.data.labelled_set`).
:data:`CLASSIFIER_VERSION` changes whenever a rule, a threshold or the weights do; a category sidecar records it with
:data:`SETTINGS` (which holds the weights' SHA-256).
"""

from __future__ import annotations

import json
from typing import Tuple

from .content_model import MANIFEST_PATH, predict
from .content_rules import CATEGORIES, FAMILIES, RULE_SETTINGS, decide, features

__all__ = [
    "CATEGORIES",
    "CLASSIFIER_VERSION",
    "SETTINGS",
    "FAMILIES",
    "SURE_RULES",
    "SURE_CONFIG",
    "SURE_HEX_SHARE",
    "classify_text",
    "classifier_record",
    "classify_rules",
]

CLASSIFIER_VERSION = 3
#: the rules' categories whose decision stands (the rest go to the model); see classify_text
SURE_RULES = ("other", "json", "log", "uuid", "hash", "base64")
#: the config decisions that stand: syntax no other category has (an INI / TOML ``[section]`` line with ``key =`` lines;
#: a YAML block scalar's ``key: |`` line; most lines one file path each: a list of certificates, a manifest; three
#: lines in four block-style YAML ``key: scalar`` / ``- item`` with no line that ends like code or JSON)
SURE_CONFIG = ("INI / TOML sections", "YAML block scalars", "lines of paths", "YAML mappings")
#: hex stands too where hex tokens are nearly all of the piece and whole ones of no digest length are there (hex and
#: digests differ by their lengths alone, which the rules count exactly); other hex-looking pieces go to the model
SURE_HEX_SHARE = 0.9
#: the share of English function words among the words above which unaccented Latin-script text with no function
#: word of another language is English (see classify_text)
ENGLISH_SHARE = 0.2
#: "other" (the model has no such category: nothing labelled is "other") stands where nothing matched and letters are
#: and digits are each fewer than this share of the non-space characters (symbols)
SYMBOLS_LETTERS = 0.3


def _settings() -> dict:
    try:  # the weights' hash as recorded (load_weights checks the weights against it before their first use)
        with open(MANIFEST_PATH) as fh:
            digest = json.load(fh)["weights_sha256"]
    except (OSError, ValueError, KeyError):
        digest = None  # no model yet (scripts/train_content_model.py writes it); classify_text would fail
    return {
        **RULE_SETTINGS,
        "sure_rules": list(SURE_RULES),
        "sure_config": list(SURE_CONFIG),
        "sure_hex_share": SURE_HEX_SHARE,
        "symbols_letters": SYMBOLS_LETTERS,
        "english_share": ENGLISH_SHARE,
        "model_sha256": digest,
    }


SETTINGS = _settings()


def classifier_record() -> dict:
    """``{"version", "settings"}`` of this classifier: what a category sidecar made with it records."""
    return {"version": CLASSIFIER_VERSION, "settings": SETTINGS}


def classify_rules(text: str) -> Tuple[str, str]:
    """(category, rule) by the rules alone (classifier version 1's decision list)."""
    return decide(features(text))


def classify_text(text: str) -> Tuple[str, str]:
    """(category, what decided it) of ``text`` from its content alone; the category is one of :data:`CATEGORIES`."""
    f = features(text)
    cat, rule = decide(f)
    symbols = rule == "nothing matched" and f["letters"] < SYMBOLS_LETTERS and f["digits"] < SYMBOLS_LETTERS
    sure = (
        cat in SURE_RULES and (cat != "json" or f["json_parse"]) and (cat != "other" or rule == "too short" or symbols)
    ) or rule in SURE_CONFIG
    if sure or (cat == "hex" and f["whole_hex"] and f["blob"] >= SURE_HEX_SHARE):
        return cat, rule
    pred, p = predict(text, f, cat)
    if pred == "prose_other" and _plainly_english(f) and "\ufffd" not in text.strip("\ufffd"):
        return "prose_en", f"English function words, no other language's (model: prose_other p={p:.2f})"
    return pred, f"model p={p:.2f} (rules: {cat}, {rule})"


def _plainly_english(f: dict) -> bool:
    """Latin script without accents (and without undecodable bytes inside the text, where accents may have been), at least
    :data:`ENGLISH_SHARE` of the words English function words and more than twice another language's: English,
    whatever the model says (it learned ``prose_other`` from message catalogs, whose short lines it confuses with
    short English sentences)."""
    return f["non_latin"] == 0 and f["accented"] < 0.01 and f["en"] >= ENGLISH_SHARE and f["en"] > 2 * f["foreign"]
