"""Where a document holds natural language by its format's syntax: Python comments and string literals (by
:mod:`tokenize`), C and JavaScript comments, the comment lines of config files, the paragraph and list text of
Markdown and reStructuredText, the text nodes of XML/HTML, the running text of LaTeX outside commands, braces and
math.

The labelled set (:mod:`mda_fast.data.labelled_set`) uses it to label a row-sized piece by its content: a piece whose
every non-space byte lies in such a region, and that reads as prose, is prose (``prose_en`` / ``prose_other``)
whatever file it came from (a sentence of a docstring is English, not Python: a content classifier sees no file).
Markers are never part of a region (``#``, ``//``, a comment's leading ``*``, a list bullet, a heading's ``#`` or
underline, quotes, tags, backslash commands), so a piece that shows one keeps its file's label.

:func:`regions` returns a boolean mask over the UTF-8 bytes of the document; categories with no rule here (JSON,
tables, blobs, logs, prose itself) get ``None``.
"""

from __future__ import annotations

import io
import re
import tokenize
from typing import List, Optional, Tuple

import numpy as np

__all__ = ["regions", "REGION_CATEGORIES"]

Span = Tuple[int, int]  # character offsets [start, end)


def _python(text: str) -> List[Span]:
    """Comment text after ``#``, and the bodies of string literals (without prefix and quotes)."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    pos = lambda rc: starts[rc[0] - 1] + rc[1]  # noqa: E731  (row 1-based, column in characters)
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                a, b = pos(tok.start), pos(tok.end)
                spans.append((a + 1, b))
            elif tok.type == tokenize.STRING:
                a, b = pos(tok.start), pos(tok.end)
                s = tok.string
                m = re.match(r"[A-Za-z]*('''|\"\"\"|'|\")", s)
                if m and s.endswith(m.group(1)) and len(s) >= m.end() + len(m.group(1)):
                    spans.append((a + m.end(), b - len(m.group(1))))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a cut or broken file: the regions found before the error
    return spans


def _c_like(text: str) -> List[Span]:
    """``//`` comments after the marker; ``/* */`` comment bodies without the markers and each line's leading
    ``*``; string and character literals are skipped (a ``//`` inside a string is no comment)."""
    spans, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'`":
            j = i + 1
            while j < n and text[j] != ch and (ch == "`" or text[j] != "\n"):
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            a = i + 2
            while a < j and text[a] == "/":
                a += 1
            spans.append((a, j))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j
            a = i + 2
            while a < j and text[a] in "*!":
                a += 1
            for m in re.finditer(r"[^\n]+", text[a:j]):  # each line, without its leading " * "
                s = m.group(0)
                lead = re.match(r"\s*\*+(?!/)", s)
                off = lead.end() if lead else 0
                if s[off:].strip():
                    spans.append((a + m.start() + off, a + m.end()))
            i = j + 2
        else:
            i += 1
    return spans


_BLOCK_SCALAR = re.compile(r"^(\s*)(?:- )?[\w.\-]+:\s*[|>][-+]?\d?\s*$")


def _config(text: str) -> List[Span]:
    """The text after ``#`` or ``;`` on comment lines, and the lines of a YAML block scalar (``key: |`` or
    ``key: >`` and the lines indented below it)."""
    spans, block = [], None  # block: the indent of the key that opened a block scalar
    for m in re.finditer(r"[^\n]*", text):
        line, a = m.group(0), m.start()
        indent = len(line) - len(line.lstrip())
        if block is not None:
            if not line.strip() or indent > block:
                if line.strip():
                    spans.append((a + indent, a + len(line)))
                continue
            block = None
        c = re.match(r"\s*[#;]+", line)
        if c:
            spans.append((a + c.end(), a + len(line)))
            continue
        b = _BLOCK_SCALAR.match(line)
        if b:
            block = len(b.group(1))
    return spans


_MD_BLOCK = re.compile(r"\s*(?:#{1,6}\s|\||\.\. |:\w[\w ]*:|\[[^\]]+\]:)")
_MD_MARKER = re.compile(r"\s*(?:>\s*)*(?:[-*+]\s+|\d{1,3}[.)]\s+)?")


def _markdown(text: str) -> List[Span]:
    """Paragraph and list-item text: not headings, tables, directives, link definitions, underlines, fenced code, or
    the indented literal block after a line ending in ``::``; list bullets and quote markers are left out."""
    spans, fence, literal = [], None, False
    for m in re.finditer(r"[^\n]*", text):
        line, a = m.group(0), m.start()
        st = line.strip()
        if fence:
            if st.startswith(fence):
                fence = None
            continue
        if st.startswith(("```", "~~~")):
            fence = st[:3]
            continue
        if literal:
            if not st or line[:1] in " \t":
                continue
            literal = False
        if not st:
            continue
        if line.rstrip().endswith("::"):
            literal = True
        if _MD_BLOCK.match(line) or (len(st) >= 3 and len(set(st)) == 1 and st[0] in "=-~^*+#`'\"_"):
            continue
        spans.append((a + _MD_MARKER.match(line).end(), a + len(line)))
    return spans


def _between(pattern: re.Pattern, text: str) -> List[Span]:
    """The stretches of ``text`` between the matches of ``pattern``."""
    spans, last = [], 0
    for m in pattern.finditer(text):
        if m.start() > last:
            spans.append((last, m.start()))
        last = m.end()
    spans.append((last, len(text)))
    return spans


_XML_MARKUP = re.compile(r"<script\b.*?</script\s*>|<style\b.*?</style\s*>|<!--|-->|<[^>]*>|&#?\w+;", re.S | re.I)
_LATEX_MARKUP = re.compile(
    r"\\begin\{(equation|align|eqnarray|gather|multline|math|displaymath)\*?\}.*?\\end\{\1\*?\}|"
    r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|%[^\n]*|\\[A-Za-z]+\*?|\\.|[{}\[\]~^_&]",
    re.S,
)


def _xml(text: str) -> List[Span]:
    """Text outside tags, comments' markers, entities, and ``<script>`` / ``<style>`` elements."""
    return _between(_XML_MARKUP, text)


def _latex(text: str) -> List[Span]:
    """Running text: not a ``\\command``, a brace, a ``%`` comment, inline ``$...$`` math, or an environment's
    math (``equation``, ``align``, ...)."""
    return _between(_LATEX_MARKUP, text)


_RULES = {
    "python": _python,
    "c": _c_like,
    "javascript": _c_like,
    "config": _config,
    "markdown": _markdown,
    "xml": _xml,
    "latex": _latex,
}
#: the categories whose documents have natural-language regions by a rule here
REGION_CATEGORIES = tuple(_RULES)


def regions(category: str, text: str) -> Optional[np.ndarray]:
    """A boolean mask over the UTF-8 bytes of ``text``: True where a document of ``category`` holds natural language
    by its format's syntax (see the module docstring); ``None`` for a category with no rule."""
    rule = _RULES.get(category)
    if rule is None:
        return None
    data = text.encode("utf-8")
    # character offset -> byte offset
    widths = (
        np.frombuffer(bytes(len(ch.encode("utf-8")) for ch in text), dtype=np.uint8) if not text.isascii() else None
    )
    byte_at = None if widths is None else np.concatenate([[0], np.cumsum(widths, dtype=np.int64)])
    mask = np.zeros(len(data), dtype=bool)
    for a, b in rule(text):
        if b > a:
            if byte_at is not None:
                a, b = int(byte_at[a]), int(byte_at[b])
            mask[a:b] = True
    return mask
