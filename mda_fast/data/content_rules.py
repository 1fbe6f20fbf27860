"""The rule half of the content classifier (:mod:`mda_fast.data.content`): one pass of regular-expression counts over
the text (:func:`features`), then a fixed decision list (:func:`decide`): blobs (share of the non-space characters in
blob tokens), then the line-oriented formats (log, table, JSON, config) and markup (XML, LaTeX), then code by
language (each language's evidence per line), then markdown, then prose by language.

The classifier keeps the decisions of the rules that are sure (:data:`mda_fast.data.content.SURE_RULES`) and hands
the rest to the learned model (:mod:`mda_fast.data.content_model`), which reads these features too. Categories
(:data:`CATEGORIES`, the sidecar's column order):

=============== ===================================================================================================
``latex``       LaTeX source: ``\\section{``, ``\\begin{...}``, ``\\frac``, ``\\cite`` ... commands
``xml``         XML / HTML / SVG: tags with attributes, closing tags, ``<?xml``, ``<!DOCTYPE``, comments
``python``      Python: ``def``/``class``/``import`` lines, ``self.``, block lines ending in ``:``
``c``           C / C++ (and CUDA): preprocessor lines, ``;``-terminated statements, types, ``->``, ``::``
``javascript``  JavaScript / TypeScript: ``function``, ``var``/``let``/``const``, ``=>``, ``===``, ``this.``
``code``        other source code (shell, Java, Go, Rust, ...): code punctuation without one of the above
``json``        JSON and JSON lines: quoted keys, ``{}[]``, ``true``/``false``/``null``
``config``      YAML / TOML / INI: ``key: value``, ``key = value``, ``[section]`` lines, YAML block scalars
``base64``      base64 (and PEM): long tokens of the base64 alphabet mixing cases and digits
``hex``         hex strings and hex dumps (``0x1f, 0x2a``, ``de ad be ef``, long runs of hex digits)
``uuid``        UUIDs (``8-4-4-4-12`` hex groups)
``hash``        hash-like digests: hex tokens of 32, 40, 56, 64, 96 or 128 digits (MD5, SHA-1, SHA-2)
``log``         log lines: most lines carry a timestamp (ISO 8601, syslog, Apache) or start with a log level
``table``       delimited or aligned tables, mostly numbers (CSV / TSV / whitespace columns)
``markdown``    lightweight markup: Markdown and reStructuredText (headings, lists, links, fences, directives)
``prose_en``    English prose
``prose_other`` prose in another language (another script, or Latin-script text without English function words)
``other``       anything else (too short, symbols, mixed)
=============== ===================================================================================================
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Dict, Tuple

__all__ = ["CATEGORIES", "RULE_SETTINGS", "FAMILIES", "MAX_CHARS", "features", "decide"]

CATEGORIES = [
    "latex",
    "xml",
    "python",
    "c",
    "javascript",
    "code",
    "json",
    "config",
    "base64",
    "hex",
    "uuid",
    "hash",
    "log",
    "table",
    "markdown",
    "prose_en",
    "prose_other",
    "other",
]
#: coarse families for summaries (the paper's grain)
FAMILIES = {
    "latex": "latex",
    "xml": "xml",
    "python": "code",
    "c": "code",
    "javascript": "code",
    "code": "code",
    "json": "structured",
    "config": "structured",
    "base64": "blob",
    "hex": "blob",
    "uuid": "blob",
    "hash": "blob",
    "log": "log",
    "table": "table",
    "markdown": "markdown",
    "prose_en": "prose",
    "prose_other": "prose",
    "other": "other",
}
#: the characters of a text the classifier reads (longer texts: their head)
MAX_CHARS = 1 << 12
#: the lines of a text the per-line rules read
MAX_LINES = 200
RULE_SETTINGS = {"max_chars": MAX_CHARS, "max_lines": MAX_LINES, "blob_share": 0.5, "min_chars": 8}

_M = re.M
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LONGTOK = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
_HEXTOK = re.compile(r"(?:0x)?[0-9a-fA-F]+")
_HEXBYTES = re.compile(r"(?:\b(?:0x)?[0-9a-fA-F]{2}\b[ ,:]{1,3}){6,}(?:(?:0x)?[0-9a-fA-F]{2}\b)?")
_HASH_LENGTHS = (32, 40, 56, 64, 96, 128)
_PEM = re.compile(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----")

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_LEVEL = r"(?:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|FATAL|SEVERE|ALERT|EMERG)"
_LOG_LINE = re.compile(
    rf"^\s*(?:<\d{{1,3}}>\d? ?)?[\[(]?(?:\d{{4}}-\d{{2}}-\d{{2}}[ T]\d{{2}}:\d{{2}}|\d{{4}}/\d{{2}}/\d{{2}} \d{{2}}:\d{{2}}|"
    rf"\d{{2}}:\d{{2}}:\d{{2}}[.,]\d|{_MON} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}|\d{{10}}(?:\.\d+)?\s|"
    rf"{_LEVEL}[\]:\s])|^\S+ \S+ \S+ \[\d{{2}}/{_MON}/\d{{4}}:\d{{2}}:\d{{2}}:\d{{2}}",
    _M,
)

_LATEX_KNOWN = re.compile(
    r"\\(?:documentclass|usepackage|begin|end|section|subsection|subsubsection|chapter|paragraph|label|ref|eqref|"
    r"cite|citep|citet|emph|textbf|textit|texttt|mathbf|mathrm|mathcal|frac|sqrt|sum|int|prod|left|right|item|"
    r"alpha|beta|gamma|delta|epsilon|lambda|sigma|theta|mu|pi|cdot|times|leq|geq|infty|partial|hat|bar|tilde|"
    r"newcommand|renewcommand|def|caption|includegraphics|footnote|url|href|hline|vspace|hspace|maketitle|title|"
    r"author|date|bibliography|bibliographystyle|input|include|noindent|quad|qquad|mathbb|operatorname|nabla|"
    r"forall|exists|rightarrow|leftarrow|to|in|subset|cup|cap|langle|rangle|ldots|cdots|dots)(?![A-Za-z])"
)
_LATEX_BRACE = re.compile(r"\\[A-Za-z]{2,}\*?[{\[]")
_LATEX_MATH = re.compile(r"\$[^$\n]{1,80}\$")

_TAG = re.compile(
    r"</[A-Za-z][\w:.-]*\s*>|<[A-Za-z][\w:.-]*(?:\s+[\w:.-]+\s*=\s*(?:\"[^\"<>]*\"|'[^'<>]*'))+\s*/?>|"
    r"<[A-Za-z][\w:.-]*\s*/>|<!--|-->|<\?xml|<!DOCTYPE|<!\[CDATA\[|&(?:amp|lt|gt|quot|nbsp|#\d+);"
)
_TAG_BARE = re.compile(r"<(?:html|head|body|div|span|p|a|ul|ol|li|table|tr|td|th|br|hr|b|i|em|strong|h[1-6])>", re.I)

_JSON_KEY = re.compile(r"\"[^\"\n]{1,100}\"\s*:\s*(?:[\"{\[\-\d]|true|false|null)")
_JSON_LINE = re.compile(
    r"^\s*(?:[{}\[\]],?|\"[^\"\n]*\"\s*:.*|\"[^\"\n]*\",?|-?\d[\d.eE+-]*,?|true,?|false,?|null,?)\s*$", _M
)
_JSON_LIT = re.compile(r"\b(?:true|false|null)\b")

_CFG_LINE = re.compile(
    r"^\s*(?:- )?[A-Za-z_][\w.\-/]{0,60}\s*(?::(?:\s|$)|=\s*(?:\"|'|\[|\{|-?\d|true\b|false\b|[A-Za-z]|$))|"
    r"^\s*\[\[?[\w.\- \"]+\]\]?\s*$|^---\s*$|^\s*- [\w\"'.\-/]",
    _M,
)

#: an INI / TOML section header line (``[section]``, ``[tool.x.y]``, ``[[array]]``, ``[remote "origin"]``)
_INI_SECTION = re.compile(r"^\[\[?[A-Za-z_][\w.\-]*(?: \"[^\"\n]*\")?\]\]?[ \t]*$", _M)
#: an INI / TOML assignment line (``key = value``, ``key=value``, ``key =``)
_INI_ASSIGN = re.compile(r"^[ \t]*[A-Za-z_][\w.\-]*[ \t]*=(?!=)", _M)
#: a line that is one file path (``mozilla/Foo_Root_CA.crt``, ``/usr/lib/x``, ``src/a.py``): lists of paths are
#: configuration (certificate lists, manifests, ignore files)
_PATH_LINE = re.compile(r"^[ \t]*[\w.~@+\-]*(?:/[\w.@+=\-]+)+/?[ \t]*$", _M)
#: a YAML block-style line: ``key: scalar`` (a scalar without inner space unless quoted; a flow ``[...]`` or
#: ``{...}``; a block scalar's ``|`` / ``>``), ``key:`` opening a block, ``- scalar``, ``- key: scalar``
_YAML_LINE = re.compile(
    r"""^[ \t]*(?:-[ \t]+)?(?:[A-Za-z_$][\w.\-/$]*|"[^"\n]*"|'[^'\n]*'):"""
    r"""(?:[ \t]*|[ \t]+(?:"[^"\n]*"|'[^'\n]*'|[^\s#'"]\S*|\[[^\]\n]*\]|\{[^}\n]*\}|[|>][-+]?)(?:[ \t]+\#.*)?)$"""
    r"""|^[ \t]*-[ \t]+(?:"[^"\n]*"|'[^'\n]*'|[^\s:#]\S*)[ \t]*$""",
    _M,
)
#: what block-style YAML does not have: a line ending in , { } ( ) [ ; or starting with a closing bracket (JSON,
#: code's dict literals and calls), a Python statement line
_NOT_YAML = re.compile(
    r"[,{}()\[;]\s*$|^\s*[}\])]|^[ \t]*(?:def|class|if|elif|else|for|while|with|try|except|finally|return|import|"
    r"from|lambda)\b",
    _M,
)
#: a YAML block scalar's opening line (``key: |``, ``- key: >-``)
_YAML_BLOCK = re.compile(r"^[ \t]*(?:- )?[\w.\-]+:[ \t]*[|>][-+]?\d?[ \t]*$", _M)

_IDENT = re.compile(r"[^\W\d]\w*")
_PY_START = ("def ", "class ", "import ", "from ", "elif ", "except", "try:", "finally:", "else:", "with ", "return",
             "raise ", "yield ", "pass", "assert ", "async def ", "lambda ")  # fmt: skip
_PY_WORDS = ("self", "None", "True", "False", "elif", "def", "isinstance", "kwargs", "args", "cls")
_C_START = ("#include", "#define", "#if", "#endif", "#else", "#elif", "#pragma", "#undef", "/*", "* ", "*/", "//",
            "typedef ", "struct ", "namespace ", "template", "static ", "extern ", "inline ", "return ", "}")  # fmt: skip
_C_WORDS = ("void", "unsigned", "size_t", "struct", "typedef", "sizeof", "NULL", "nullptr", "namespace", "template",
            "typename", "static", "const", "int", "char", "double", "float", "long", "inline", "extern", "std",
            "constexpr", "uint8_t", "uint32_t", "uint64_t", "int64_t", "bool", "auto", "enum")  # fmt: skip
_JS_WORDS = ("function", "var", "let", "undefined", "prototype", "console", "document", "window", "require",
             "exports", "null", "typeof", "instanceof", "async", "await", "jQuery", "Object", "Array", "JSON")  # fmt: skip
_SH_START = ("fi", "then", "esac", "done", "do", "echo ", "export ", "local ", "case ", "if [", "for ", "while ")
_MD_START = ("## ", "### ", "#### ", "- ", "* ", "+ ", "> ", "```", "~~~", ".. ", "|", "1. ", "2. ", "3. ")
_MD_INLINE = ("](", "``", "**", ":`", "`_", "<http")
_NON_LATIN = re.compile(r"(?![\x00-\u024f])[^\W\d_]")
_PUNCT = re.compile(r"[{}();=<>\[\]]")
_UNDERLINE = frozenset("=-~^*+#`'\"")
_WORD = re.compile(r"[^\W\d_]+")
_EN = frozenset(
    "the of and to a in is that for it as with was on be by this are or not from at which an but have has were "
    "their they its can will would there been if more when one all than so we you your he she his her".split()
)
#: function words of other Latin-script languages (German, French, Spanish, Italian, Portuguese, Dutch)
_FOREIGN = (
    frozenset(
        "der die das und ist nicht ein eine mit von zu den dem des auf für sich auch wird werden kann "
        "le la les et est une des du dans pour pas que qui sur avec sont au aux ce cette "
        "el los las es en del por con una para como más pero sus "
        "il di che non sono della per nel gli "
        "não uma com os as ao pelo pela "
        "het een van en niet zijn voor op met ook".split()
    )
    - _EN
)
_HEX_BYTE = re.compile(r"^(?:0x)?[0-9a-fA-F]{2}$")
_ACCENTED = re.compile(r"[\u00c0-\u024f]")
_TS_ANY = re.compile(
    rf"\d{{4}}-\d{{2}}-\d{{2}}[ T]\d{{2}}:\d{{2}}:\d{{2}}|\d{{2}}/{_MON}/\d{{4}}:\d{{2}}|{_MON} +\d{{1,2}} \d{{2}}:\d{{2}}:\d{{2}}"
)
_NUMBER = re.compile(
    r"^[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?%?$|^0x[0-9a-fA-F]+$|^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?$"
)  # numbers, hex numbers, ISO 8601 dates
_DELIMS = (",", "\t", ";", "|")


def _blob(text: str, nonspace: int, idents) -> Tuple[str, float, bool]:
    """(the dominant blob kind, the share of the non-space characters in blob tokens of any kind, whether whole hex
    tokens of no hash length are there and no digest)."""
    mass = {"base64": 0, "hex": 0, "uuid": 0, "hash": 0}
    n_uuid = len(_UUID.findall(text)) if text.count("-") >= 4 else 0
    mass["uuid"] = 36 * n_uuid
    rest = _UUID.sub(" ", text) if n_uuid else text
    short = sum(len(w) for w in idents) <= 3.0 * len(idents)  # short words: maybe spaced hex bytes
    for m in _HEXBYTES.finditer(rest) if short else ():
        s = m.group(0)
        if re.search(r"[a-fA-F]", s.replace("0x", "")):
            mass["hex"] += len(s) - s.count(" ")
    listed = False
    edge = 0  # hex tokens cut by the piece's start or end: a hash or not, by the majority of the others
    for m in _LONGTOK.finditer(rest):
        tok = m.group(0)
        t = tok.strip("=_-")
        if _HEXTOK.fullmatch(t):
            body = t[2:] if t.startswith("0x") else t
            if not re.search(r"[a-fA-F]", body) or not re.search(r"\d", body):
                continue  # all digits (a number) or all letters (a word)
            if m.start() == 0 or m.end() == len(rest):
                edge += len(tok)
                listed = listed or rest[m.end() : m.end() + 2] == "  "  # `sha256sum` output: digest, two spaces
            else:
                mass["hash" if len(body) in _HASH_LENGTHS else "hex"] += len(tok)
        elif (
            re.search(r"[A-Z]", t) and re.search(r"[a-z]", t) and re.search(r"[0-9+/]", t) and "_" not in t
        ) or "+" in t:
            if "=" in t:  # "=" inside a token (not its padding): a key=value pair such as TimeoutSec=90s
                continue
            mass["base64"] += len(tok)
    whole_hex = mass["hex"] > 0 and not mass["hash"]  # whole hex tokens (not cut by the piece), none of a hash length
    mass["hash" if mass["hash"] > mass["hex"] or (listed and not mass["hex"]) else "hex"] += edge
    total = sum(mass.values())
    if not total:
        return "", 0.0, False
    kind = max(mass, key=lambda k: mass[k])
    return kind, total / max(nonspace, 1), whole_hex


def _table(lines) -> float:
    """The share of table evidence: consistent delimiters with numeric fields, or rows of numbers."""
    if len(lines) < 2:
        return 0.0
    best = 0.0
    # a piece cut from a document starts and ends mid-line: with 4 lines or more, the first and last (shorter by the
    # cut) do not vote on the delimiter count
    inner = lines[1:-1] if len(lines) >= 4 else lines
    for d in _DELIMS:
        counts = [ln.count(d) for ln in inner]
        mode = max(set(counts), key=counts.count)
        if mode < 1:
            continue
        same = sum(c == mode for c in counts) / len(counts)
        if same < 0.6:
            continue
        fields = [f.strip().strip("\"'") for ln in lines for f in ln.split(d)]
        fields = [f for f in fields if f]
        nums = [f for f in fields if _NUMBER.match(f)]
        if sum(bool(_HEX_BYTE.match(f)) for f in fields) > 0.6 * len(fields):
            continue  # bytes in hex (a byte array or dump), not a table
        num = len(nums) / max(1, len(fields))
        best = max(best, same * (0.5 + num) if num >= 0.3 else 0.0)
    words = [w.strip(",;") for ln in lines for w in ln.split()]
    if words and sum(bool(_HEX_BYTE.match(w)) for w in words) <= 0.6 * len(words):
        num = sum(bool(_NUMBER.match(w)) for w in words) / len(words)
        if num >= 0.8:
            best = max(best, num)
    return best


def _lines_features(lines, cnt) -> Dict[str, float]:
    """Per-line evidence of code by language, config, markdown and logs (counts per non-blank line)."""
    py = c = sh = md = semi = colon = triple = log = hashes = 0
    for ln in lines[:MAX_LINES]:
        st = ln.lstrip()
        end = ln.rstrip()
        if st.startswith(_PY_START) or (st[:1] == "@" and st[1:2].isalpha()):
            py += 1
        if (st[:1] == "#" and not st.startswith(_C_START)) or st[:1] == ";":  # shell / YAML / INI comments
            hashes += 1
        if st.startswith(_C_START):
            c += 1
        if st.startswith(_SH_START):
            sh += 1
        if st.startswith(_MD_START) or (st[:1] in _UNDERLINE and len(st) >= 3 and len(set(end.strip())) == 1):
            md += 1
        if end.endswith((";", "{", ");", "};")):
            semi += 1
        if end.endswith(":") and not end.endswith("::"):
            colon += 1
        if '"""' in ln or "'''" in ln:
            triple += 1
        if st[:1].isdigit() or st[:1] in "<[(" or st[:1].isupper():
            if _LOG_LINE.match(ln[:80]):
                log += 1
    L = max(min(len(lines), MAX_LINES), 1)
    words = lambda ks: sum(cnt.get(k, 0) for k in ks)  # noqa: E731
    return {
        "py": (py + colon + 2 * triple + words(_PY_WORDS)) / L,
        "c": (c + semi + words(_C_WORDS)) / L,
        "js": (words(_JS_WORDS) + 0.5 * semi) / L,
        "code_other": (sh + 0.5 * semi) / L,
        "md": md / L,
        "log": log / L,
        "semi": semi / L,
        "hash_comments": hashes / L,
    }


def features(text: str) -> Dict[str, float]:
    """The counts and shares :func:`decide` reads (a dict; see the module docstring)."""
    s = text[:MAX_CHARS].lstrip("\ufeff")
    n = len(s)
    nonspace = n - sum(s.count(c) for c in " \t\r\n\x0b\x0c")
    lines = [ln for ln in s.splitlines() if ln.strip()]
    L = max(len(lines), 1)
    digits = sum(s.count(d) for d in "0123456789")
    idents = _IDENT.findall(s)
    cnt = Counter(idents)
    blob_kind, blob_share, whole_hex = _blob(s, nonspace, idents)
    nw = max(len(idents), 1)
    letters = sum(len(w) for w in idents)
    non_latin = 0 if s.isascii() else len(_NON_LATIN.findall(s))
    en = sum(cnt.get(w, 0) + cnt.get(w.capitalize(), 0) + cnt.get(w.upper(), 0) for w in _EN)
    foreign = sum(cnt.get(w, 0) + cnt.get(w.capitalize(), 0) for w in _FOREIGN)
    tags = _TAG.findall(s) if "<" in s or "&" in s else []
    quotes_or_braces = '"' in s or "{" in s or "[" in s
    f = {
        "n": n,
        "nonspace": nonspace,
        "lines": L,
        "blob_kind": blob_kind,
        "blob": blob_share,
        "whole_hex": whole_hex,
        "pem": "-----BEGIN " in s or "-----END " in s,
        "digits": digits / max(nonspace, 1),
        "table": _table(lines[:200]) if digits >= 0.15 * nonspace else 0.0,
        "json_key": len(_JSON_KEY.findall(s)) / L if '"' in s else 0.0,
        "json_line": len(_JSON_LINE.findall(s)) / L if quotes_or_braces else 0.0,
        "json_parse": _parses(s),
        "cfg": len(_CFG_LINE.findall(s)) / L,
        "ini_sections": len(_INI_SECTION.findall(s)) if "[" in s else 0,
        "ini_assign": len(_INI_ASSIGN.findall(s)) / L if "=" in s else 0.0,
        "yaml_block": len(_YAML_BLOCK.findall(s)) if ":" in s else 0,
        "path_lines": len(_PATH_LINE.findall(s)) / L if "/" in s and L >= 3 else 0.0,
        "yaml_lines": _yaml_lines(s),
        "tags": (sum(len(t) for t in tags) + 8 * len(_TAG_BARE.findall(s))) / max(nonspace, 1),
        "n_tags": len(tags),
        "markup_start": s.lstrip()[:9].lower().startswith(("<?xml", "<!doctype", "<html", "<svg", "<rss", "<feed")),
        "latex": (len(_LATEX_KNOWN.findall(s)) + len(_LATEX_BRACE.findall(s)) + len(_LATEX_MATH.findall(s))) / L,
        "punct": len(_PUNCT.findall(s)) / max(nonspace, 1),
        "md_inline": sum(s.count(x) for x in _MD_INLINE) / L,
        "js_sym": (s.count("=>") + s.count("===") + s.count("!==") + s.count("this.") + s.count("function(")) / L,
        "c_sym": (s.count("->") + s.count("::") + s.count("#include") + s.count("#define")) / L,
        "letters": letters / max(nonspace, 1),
        "non_latin": non_latin / max(letters, 1),
        "en": en / nw,
        "foreign": foreign / nw,
        "accented": 0 if s.isascii() else len(_ACCENTED.findall(s)) / max(letters, 1),
        "ts": len(_TS_ANY.findall(s)) / L if L <= 3 else 0.0,  # only short pieces need it (see decide)
        "mean_word": letters / nw,
        "n_words": len(idents),
    }
    f.update(_lines_features(lines[:400], cnt))
    return f


def _yaml_lines(s: str) -> float:
    """The share of block-style YAML lines (:data:`_YAML_LINE`) among the lines that are not comments, ``---`` or a
    block scalar's text (the lines indented below ``key: |``); 0 with fewer than 4 such lines, or with any line that
    block-style YAML does not have (:data:`_NOT_YAML`)."""
    if ":" not in s and "- " not in s:
        return 0.0
    body, block = [], None  # block: the indent of the key that opened a block scalar
    for ln in s.splitlines():
        st = ln.strip()
        if not st:
            continue
        indent = len(ln) - len(ln.lstrip())
        if block is not None and indent > block:
            continue
        block = None
        if st.startswith("#") or st == "---":
            continue
        body.append(ln)
        if _YAML_BLOCK.match(ln):
            block = indent
    if len(body) < 4:
        return 0.0
    text = "\n".join(body)
    if _NOT_YAML.search(text):
        return 0.0
    return len(_YAML_LINE.findall(text)) / len(body)


def _parses(s: str) -> bool:
    t = s.strip()
    if len(t) < 2 or t[0] not in "{[" or t[-1] not in "}]":
        return False
    try:
        json.loads(t)
        return True
    except ValueError:
        return False


def decide(f: Dict[str, float]) -> Tuple[str, str]:
    """(category, the rule that decided it) from :func:`features`."""
    if f["nonspace"] < RULE_SETTINGS["min_chars"]:
        return "other", "too short"
    if f["table"] >= 0.9:
        return "table", "numeric columns"
    if f["blob"] >= RULE_SETTINGS["blob_share"] or (f["pem"] and f["blob"] >= 0.3 and f["blob_kind"] == "base64"):
        return f["blob_kind"], f"blob tokens {f['blob']:.2f}"
    if f["json_parse"]:
        return "json", "parses as JSON"
    if f["log"] >= 0.5 or (f["ts"] >= 0.5 and f["lines"] <= 3):
        return "log", "timestamped lines"
    if f["table"] >= 0.7:
        return "table", "numeric columns"
    if f["tags"] >= 0.3 or (f["n_tags"] >= 2 and f["tags"] >= 0.15) or f["markup_start"]:
        return "xml", "markup"
    if f["latex"] >= 0.5:
        return "latex", "LaTeX commands"
    if f["ini_sections"] >= 1 and f["ini_assign"] > 0 and f["py"] < 0.3 and f["c_sym"] < 0.1:
        return "config", "INI / TOML sections"
    if f["yaml_block"] >= 1 and f["semi"] < 0.2:
        return "config", "YAML block scalars"
    if f["path_lines"] >= 0.6:
        return "config", "lines of paths"
    if f["yaml_lines"] >= 0.75:
        return "config", "YAML mappings"
    if (f["json_key"] >= 0.4 or f["json_line"] >= 0.7) and f["py"] < 0.3 and f["js_sym"] < 0.2:
        return "json", "quoted keys"
    js = f["js"] + f["js_sym"]
    code = {"python": f["py"], "c": f["c"], "javascript": js, "code": f["code_other"]}
    if js >= 0.25 and js >= 0.5 * f["c"]:
        code["javascript"] = max(code.values()) + 1e-9
    lang = max(code, key=lambda k: code[k])
    if f["cfg"] >= 0.5 and f["cfg"] >= code[lang] and f["cfg"] >= f["md"] + 0.3 and f["md_inline"] < 0.2:
        return "config", "key/value lines"
    if f["hash_comments"] >= 0.5 and code[lang] < f["hash_comments"]:
        return "config", "#-comment lines"
    if code[lang] >= 0.3:
        return lang, f"{lang} evidence {code[lang]:.2f}/line"
    if (f["md"] >= 0.25 or f["md_inline"] >= 0.2) and f["letters"] >= 0.3:
        return "markdown", "markup lines"
    if f["letters"] >= 0.6 and f["n_words"] >= 2:
        if f["non_latin"] >= 0.3:
            return "prose_other", "non-Latin script"
        if f["foreign"] > f["en"] or (f["accented"] >= 0.02 and f["en"] < 0.05):
            return "prose_other", "function words of another language"
        if f["n_words"] >= 40 and f["en"] < 0.04:
            return ("prose_other", "many words, few English ones") if f["letters"] >= 0.8 else ("other", "few words")
        return "prose_en", "English (Latin script, English function words or none of another language)"
    if f["table"] >= 0.5:
        return "table", "numeric columns"
    return "other", "nothing matched"
