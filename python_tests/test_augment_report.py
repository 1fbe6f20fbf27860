"""augment.html: the main report's page, cards, navigation and sections; findings as prose per size; escaping; and
(where chromium is installed) a headless screenshot that shows a rendered page."""

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from mda_fast.augment.generators import byte_encode
from mda_fast.augment.report import (
    augment_section_html,
    findings_by_size,
    render_augment_report,
    summary_cards_html,
    write_augment_report,
)
from mda_fast.study.report_html import PAGE_CSS

ARMS = ("none", "random", "copy", "top", "mechanistic")
KEYS = ("copy_frac", "span_len", "copy_dist", "max_repeats", "period_strength", "frac_alpha", "frac_punct",
        "tag_depth", "entropy", "compress")  # fmt: skip


def _ms(m, s=0.0):
    return {"mean": m, "std": s, "n": 2}


def _arm(gain, std, seed):
    rng = np.random.default_rng(seed)
    steps = [100, 150, 200, 250]
    runs = {str(k): {"steps": steps, "score": list(0.1 + 0.1 * np.arange(4) + 0.01 * rng.random(4))} for k in (0, 1)}
    summary = {
        "gain": _ms(gain, std),
        "score_at_gain_step": _ms(0.3),
        "emergence_step": _ms(180.0, 10.0),
        "icl_at_gain_step": _ms(-0.2, 0.01),
        "heldout_loss_final": _ms(4.5, 0.001),
        "heldout_loss_change": _ms(0.002, 0.001),
    }
    return {"seeds": runs, "summary": summary}


def _res():
    gains = {"tiny-2l": {"random": 0.02, "copy": 0.05, "top": 0.2, "mechanistic": 0.15},
             "tiny-2l-w": {"random": 0.01, "copy": 0.10, "top": 0.3, "mechanistic": 0.11}}  # fmt: skip
    sizes = {}
    for i, (p, g) in enumerate(gains.items()):
        arms = {a: _arm(g.get(a, 0.0), 0.0 if a in ("none", "top") else 0.02, i * 10 + j) for j, a in enumerate(ARMS)}
        sizes[p] = {"preset": p, "emergence_step": 200 if i == 0 else None, "window": [100, 200], "train_until": 250,
                    "gain_step": 200, "budget_rows": 12, "budget_tokens": 1536, "base_train_s": 1.0, "arms": arms}  # fmt: skip
    motif = {
        "id": "motif0",
        "support": [3, 7],
        "share": 1.0,
        "features": {k: {"mean": 0.5, "std": 0.1} for k in KEYS},
        "contrast": {k: {"bottom": 0.2, "random": 0.3} for k in KEYS},
        "description": "copies <script>alert(1)</script> spans",
        "examples": [{"id": 3, "spans": [[6, 0, 4]]}],
    }
    return {
        "sizes": sizes,
        "threshold": 0.3,
        "seeds": [0, 1],
        "gain_definition": "(score - score_none) / score_none at the gain step",
        "motifs": {
            "small": {
                "mined_on": "tiny-2l",
                "head": {"layer": 1, "head": 0, "role": "induction"},
                "n": {"top": 2},
                "top_categories": {"repeat": 2},
                "bottom_categories": {"prose": 2},
                "motifs": [motif],
            }
        },  # fmt: skip
        "llm": [],
        "settings": {"augment": {"sizes": list(sizes)}},
        "stage_seconds": {"arms": 3.0},
        "elapsed_s": 12.0,
        "findings": [
            "tiny-2l (gain at step 200): random +2.0% ± 2.0, mechanistic +15.0% ± 2.0.",
            "tiny-2l: the mechanistic data beat the generic copy baseline beyond seed spread.",
            "tiny-2l-w: no head reached 0.3 in the base run; gains are measured at step 200 anyway.",
            "tiny-2l-w: the mechanistic data did not beat the copy baseline beyond seed spread (+11.0% vs +10.0%).",
            "All arms used the same budget.",
        ],
    }


TEXTS = {3: byte_encode("abcd..abcd tail")}
SECTIONS = ("aug-findings", "aug-gain", "aug-curves", "aug-table", "aug-sizes", "aug-motifs", "aug-settings")


def test_page_has_the_main_reports_style_navigation_cards_and_sections():
    page = render_augment_report(_res(), TEXTS)
    assert PAGE_CSS in page and "<h1>Mechanistic data augmentation</h1>" in page
    nav = re.search(r"<nav>(.*?)</nav>", page).group(1)
    assert re.findall(r'href="#([^"]+)"', nav) == list(SECTIONS)
    for a in SECTIONS:
        assert page.count(f'<section id="{a}">') == 1
    # sizes, seeds, tokens, the mechanistic gain on each of the 2 sizes, the verdict, motifs, wall time
    assert page.count('<div class="card">') == 8
    assert page.count("data:image/png;base64,") == 2 and page.count("<figcaption>") == 2
    table = page[page.index('<section id="aug-table">') : page.index('<section id="aug-sizes">')]
    assert table.count("<tr>") == 1 + 2 * len(ARMS)
    assert "+15.00% ± 2.00" in table and "never" not in table
    sizes = page[page.index('<section id="aug-sizes">') : page.index('<section id="aug-motifs">')]
    assert "not reached" in sizes and "1,536" in sizes
    # the example row with its copied span and (faded) source highlighted; data escaped
    assert '<mark class="c">abcd</mark>' in page and '<mark class="c" style="opacity:.55">abcd</mark>' in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_cards_count_the_sizes_where_mechanistic_beat_copy():
    cards = summary_cards_html(_res())
    # tiny-2l: 0.15 > 0.05 + 0.02 (beat); tiny-2l-w: 0.11 < 0.10 + 0.02 (not beyond the spread)
    assert "1 of 2" in cards and "+15.00% ± 2.00" in cards and "(copy +5.00% ± 2.00)" in cards
    assert "1 on tiny-2l" in cards


def test_findings_are_prose_per_size_not_a_bullet_list():
    general, per = findings_by_size(_res())
    assert general == ["All arms used the same budget."]
    # tiny-2l-w's sentences are not taken for tiny-2l's (the longer name is matched first)
    assert per["tiny-2l"] == [
        "Gain at step 200: random +2.0% ± 2.0, mechanistic +15.0% ± 2.0.",
        "The mechanistic data beat the generic copy baseline beyond seed spread.",
    ]
    assert per["tiny-2l-w"][0].startswith("No head reached 0.3") and len(per["tiny-2l-w"]) == 2
    sec = render_augment_report(_res(), TEXTS)
    sec = sec[sec.index('<section id="aug-findings">') : sec.index('<section id="aug-gain">')]
    assert "<li>" not in sec and "<h3>tiny-2l</h3><p>Gain at step 200" in sec and "<h3>tiny-2l-w</h3>" in sec


def test_embeddable_block_and_atomic_write(tmp_path):
    block = augment_section_html(_res(), TEXTS)
    assert block.startswith('<div id="augment">') and "<html" not in block and '<div class="cards">' in block
    path = write_augment_report(_res(), str(tmp_path / "augment.html"), TEXTS)
    assert open(path, encoding="utf-8").read().startswith("<!DOCTYPE html>")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_renders_in_a_headless_browser(tmp_path):
    """The page as chromium draws it: a screenshot with the navigation bar's and cards' grey boxes and the plots."""
    from matplotlib.image import imread

    html = tmp_path / "augment.html"
    write_augment_report(_res(), str(html), TEXTS)
    png = tmp_path / "shot.png"
    profile = tempfile.mkdtemp()
    try:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,1600", f"file://{html}"],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert os.path.exists(png), "chromium wrote no screenshot"
    img = imread(str(png))[..., :3]
    assert img.shape[:2] == (1600, 1280)
    soft = np.all(np.abs(img - np.array([0xF5, 0xF7, 0xF9]) / 255) < 0.01, axis=-1)  # --soft: nav, cards, th
    assert soft.mean() > 0.01, "no styled boxes were drawn (the style sheet did not apply)"
    colourful = (img.max(-1) - img.min(-1)) > 0.3  # the plots' bars and lines
    assert colourful.mean() > 0.002, "no plot was drawn"


def test_the_environment_is_in_the_settings_section():
    from mda_fast.augment.report import render_augment_report

    res = {**_res(), "environment": {"torch_threads": 7, "torch": "2.13.0"}}
    page = render_augment_report(res)
    assert "torch_threads" in page and ">7<" in page
