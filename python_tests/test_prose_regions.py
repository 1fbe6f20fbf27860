"""Natural-language regions of documents by their format's syntax (:mod:`mda_fast.data.prose_regions`), the content
labels of the labelled set built on them (:func:`mda_fast.data.labelled_set.content_label`), and the config and table
rules of classifier version 3."""

import numpy as np
import pytest

from mda_fast.data.content import classify_text
from mda_fast.data.content_rules import decide, features
from mda_fast.data.labelled_set import Document, content_label, pieces
from mda_fast.data.prose_regions import REGION_CATEGORIES, regions


def _text(category, text):
    """The region bytes of ``text`` joined (a region's end and the next one's start with a "|")."""
    m = regions(category, text)
    data = text.encode()
    out, prev = [], False
    for i, on in enumerate(m):
        if on:
            if not prev and out:
                out.append(b"|")
            out.append(data[i : i + 1])
        prev = bool(on)
    return b"".join(out).decode()


def test_python_comments_and_string_bodies_without_markers():
    src = 'import os  # the os module\n\ndef f(x):\n    """Return x."""\n    return "ok" + r\'raw\'\n'
    assert _text("python", src) == " the os module|Return x.|ok|raw"
    # a cut or broken file keeps the regions before the break
    assert _text("python", 'x = 1  # one\ns = """open') == " one"


def test_c_and_javascript_comments_skip_strings_and_leading_stars():
    src = 'int a = 1; // count\nchar *s = "// no";\n/**\n * Line one.\n * Line two.\n */\nx = `/* no */`;\n'
    assert _text("c", src) == " count| Line one.| Line two."
    assert _text("javascript", "let u = 'http://x'; /* note */") == " note "


def test_config_comments_and_yaml_block_scalars():
    src = "# Global settings\n[main]\nkey = 1 # trailing\n; old style\ndesc: |\n  First line.\n  Second.\nnext: 2\n"
    assert _text("config", src) == " Global settings| old style|First line.|Second."


def test_markdown_paragraphs_without_markers_headings_or_code():
    src = "# Title\n\nSome text here.\n\n- item one\n> quoted\n\n```\ncode line\n```\n\nUnder\n-----\n\nExample::\n\n    literal\n\nEnd.\n"
    assert _text("markdown", src) == "Some text here.|item one|quoted|Under|Example::|End."


def test_xml_text_nodes_and_latex_running_text():
    assert _text("xml", "<p class='a'>Hello &amp; bye</p><script>var x;</script>") == "Hello | bye"
    tex = "\\section{Intro} We show $x^2$ holds.\n% note\n\\begin{equation}a=b\\end{equation} Done."
    assert _text("latex", tex) == "Intro| We show | holds.\n|\n| Done."  # the equation is math, not text


def test_regions_are_byte_masks_and_none_without_a_rule():
    text = "# é naïve\nx = 1\n"
    m = regions("python", text)
    assert m.dtype == bool and m.size == len(text.encode())
    assert _text("python", text) == " é naïve"
    assert regions("json", '{"a": 1}') is None and "json" not in REGION_CATEGORIES


def test_content_label_needs_the_region_and_prose():
    doc = '"""\nThis module reads the files of the archive and returns them in the order in which they were written.\n"""\nimport os\n'
    mask = regions("python", doc)
    inside = doc[4:100]
    assert content_label("python", mask, 4, inside) == "prose_en"
    # the same words shifted over the closing quotes and the import: python
    start = doc.index("written")
    assert content_label("python", mask, start, doc[start:]) == "python"
    # in a region but code by content (a doctest line): python
    code = "x = compute(a, b)\nreturn x[0]"
    d2 = f'"""{code}"""'
    assert content_label("python", regions("python", d2), 3, code) == "python"
    assert content_label("prose_en", None, 0, "anything") == "prose_en"


def test_pieces_label_by_content_only_on_request():
    doc = Document(
        "python", "x.py", '"""' + "The reader keeps the order of the files it was given. " * 20 + '"""\n', "0", "x.py"
    )
    by_file = pieces([doc], n_bytes=129, per_doc=3)
    by_content = pieces([doc], n_bytes=129, per_doc=3, labels="content")
    assert [p[1] for p in by_file] == [p[1] for p in by_content]
    assert {p[0] for p in by_file} == {"python"} and {p[0] for p in by_content} == {"prose_en"}
    with pytest.raises(ValueError, match="labels"):
        pieces([doc], n_bytes=129, labels="both")


@pytest.mark.parametrize(
    "text,rule",
    [
        ("[defaults]\n\tblocksize = 4096\n\tinode_size = 256\n\n[fs_types]\n\text3 = {\n", "INI / TOML sections"),
        ('[tool.scikit-build.cmake]\nknown-wheels = [\n    "win_arm64",\n    "win32",\n', "INI / TOML sections"),
        (
            "- tag: inplace_view\n  desc: |\n    This tag indicates that the operator changes metadata\n",
            "YAML block scalars",
        ),
        ("mozilla/Certigna.crt\nmozilla/Certum_EC-384_CA.crt\nmozilla/D-TRUST_Root_CA_3_2013.crt\n", "lines of paths"),
    ],
)
def test_config_syntax_rules_stand(text, rule):
    assert decide(features(text)) == ("config", rule)
    assert classify_text(text) == ("config", rule)


def test_no_config_rule_for_code_with_brackets_or_assignments():
    py = "def f(x):\n    y = [x]\n    return y\n\nclass A:\n    b = 1\n"
    assert classify_text(py)[0] == "python"
    c = "static int table[16];\nint main(void) {\n  x = 1;\n  return x;\n}\n"
    assert classify_text(c)[0] == "c"


def test_key_value_tokens_are_not_base64_and_dated_csv_is_a_table():
    cfg = "#SyncIntervalSec=5m\n#RateLimitIntervalSec=30s\n#RateLimitBurst=10000\n#SystemMaxUse=\n#SystemKeepFree=\n"
    assert features(cfg)["blob"] == 0.0 and classify_text(cfg)[0] == "config"
    csv = ",buzz,1993-08-16,1996-06-17,1997-06-05\n1.2,Rex,rex,1996-06-17,1996-12-12,1998-06-05\n1.3,Bo,bo,1996-12-12,1997-06-05,1999-03-09\n2."
    assert decide(features(csv))[0] == "table"
    b64 = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODk=\n" * 3
    assert classify_text(b64)[0] == "base64"


def test_regions_are_masks_over_the_document_bytes_on_any_input():
    rng = np.random.default_rng(0)
    for cat in REGION_CATEGORIES:
        text = "".join(rng.choice(list("ab #/*\"'<>{}\\$%\n=:-|`é")) for _ in range(400))
        m = regions(cat, text)
        assert m.shape == (len(text.encode()),)


def test_plain_english_the_model_calls_another_language_is_english():
    """Short English lines like a message catalog's: the model says prose_other, the function words say English;
    text with another language's function words, accents or undecodable bytes inside stays with the model."""
    en = "The title of the color selection dialog\n\nThe title of the file chooser dialog.\n\nThe submenu attached to the menu item, or NULL if it has none\n\n"
    cat, why = classify_text(en)
    assert cat == "prose_en" and why.startswith("English function words") and "prose_other" in why
    assert classify_text("Die Kommission traf sich am Dienstag und war sich einig. " * 4)[0] == "prose_other"
    assert classify_text("In directief nummer %u is de combinatie van vlaggen ongeldig.\n" * 3)[0] == "prose_other"
    # the same English with a byte that did not decode inside it (a Latin-1 catalog's accent): not overruled
    broken = en.replace("color", "col\ufffdr")
    assert not classify_text(broken)[1].startswith("English function words")


WORKFLOW = """name: CI
on:
  push:
    branches: [main]
jobs:
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - name: Install
        run: |
          python -m pip install --upgrade pip
          pip install -e .[test]
      - run: pytest -q
"""
COMPOSE = "version: '3'\nservices:\n  web:\n    image: nginx:latest\n    ports:\n      - \"80:80\"\n    volumes:\n      - ./html:/usr/share/nginx/html\n"
K8S = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n        - name: web\n          image: nginx:1.25\n"


@pytest.mark.parametrize("text", [WORKFLOW, COMPOSE, K8S])
def test_block_style_yaml_is_config(text):
    """YAML as repositories hold it (a CI workflow, a compose file, a Kubernetes manifest): config, by the rule, not
    python (its ``key:`` lines end in a colon as Python's block lines do)."""
    assert classify_text(text)[0] == "config"
    assert decide(features(text))[1] in ("YAML mappings", "YAML block scalars")


@pytest.mark.parametrize(
    "text",
    [
        # a Google-style docstring: "key: value" lines whose values are sentences
        "    Args:\n        options: a dict containing the options passed.\n        results: a dict mapping names.\n"
        "    Returns:\n        None when nothing matched.\n",
        # a dict literal and a JS object: lines end with a comma
        "TOKENS = {\n    '!=': NOTEQUAL,\n    '%': PERCENT,\n    '/': SLASH,\n    '//': DOUBLESLASH,\n}\n",
        "const opts = {\n  prefix: this.prefix,\n  timing: true,\n  color: this.color,\n  level: 'info',\n}\n",
        # JSON
        '{\n  "name": "x",\n  "version": "1.0",\n  "main": "index.js",\n  "license": "MIT"\n}\n',
        # Python with annotations
        "class Point:\n    x: int\n    y: int\n    label: str\n    weight: float\n",
    ],
)
def test_no_yaml_rule_for_docstrings_literals_json_or_annotations(text):
    assert decide(features(text))[1] != "YAML mappings"
