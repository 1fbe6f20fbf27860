"""Names of a Megatron token stream on disk: ``<prefix>.bin`` or Pythia's shards ``<prefix>-IIIII-of-LLLLL.bin``,
where ``LLLLL`` is the **last index**, not the count (``document-00000-of-00020.bin`` .. ``-00020-of-00020.bin`` are
21 shards); resolving what a user names (a prefix, a ``.idx``/``.bin``, shard 0, a directory) to the prefix."""

from __future__ import annotations

import os
import re
from typing import Dict, List, Sequence, Tuple, Union

from ..errors import DataError, MissingDataError

SHARD_CONVENTION = (
    "Pythia's shard convention: <prefix>-IIIII-of-LLLLL.bin for IIIII = 00000..LLLLL, where LLLLL is the LAST "
    "index, not the count: document-00000-of-00020.bin .. document-00020-of-00020.bin are 21 shards"
)
SHARD_NAME = re.compile(r"(.+)-\d+-of-\d+")


def strip_prefix(path_prefix: Union[str, os.PathLike]) -> str:
    p = os.fspath(path_prefix)
    for ext in (".idx", ".bin"):
        if p.endswith(ext):
            return p[: -len(ext)]
    return p


def resolve_prefix(path: Union[str, os.PathLike]) -> str:
    """The dataset prefix ``path`` names: ``<prefix>``, ``<prefix>.idx``, ``<prefix>.bin``, a shard
    ``<prefix>-00000-of-00020.bin`` (what Pythia's ``unshard_memmap.py --input_file`` takes), or a directory
    holding exactly one ``.idx`` (e.g. a download of ``pile-deduped-pythia-preshuffled/``).

    Raises :class:`MissingDataError` for a directory without a ``.idx``, :class:`DataError` for one with several.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        idx = sorted(n for n in os.listdir(p) if n.endswith(".idx"))
        if not idx:
            raise MissingDataError(
                f"directory {p!r} holds no Megatron .idx: expected Pythia's document.idx beside document.bin or "
                f"the shards document-IIIII-of-LLLLL.bin"
            )
        if len(idx) > 1:
            raise DataError(
                f"directory {p!r} holds several Megatron indexes {idx}; name one prefix, e.g. "
                f"{os.path.join(p, idx[0][:-4])!r}"
            )
        return os.path.join(p, idx[0][:-4])
    prefix = strip_prefix(p)
    m = SHARD_NAME.fullmatch(os.path.basename(prefix))
    if p.endswith(".bin") and m is not None and not os.path.isfile(prefix + ".idx"):
        return os.path.join(os.path.dirname(prefix), m.group(1))
    return prefix


def shard_files(prefix: str) -> List[Tuple[int, int, str]]:
    """``(index, last_index, file name)`` of every file in ``prefix``'s directory named like one of its shards."""
    directory = os.path.dirname(prefix) or "."
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d+)-of-(\d+)\.bin")
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        m = pattern.fullmatch(name)
        if m is not None:
            out.append((int(m.group(1)), int(m.group(2)), name))
    return out


def format_indices(ix: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(f"{i:05d}" for i in ix[:limit])
    return f"{len(ix)} shard{'s' if len(ix) != 1 else ''} [{shown}{', ...' if len(ix) > limit else ''}]"


def shard_bin_paths(path_prefix: Union[str, os.PathLike]) -> List[str]:
    """Paths of the sharded token stream ``<prefix>-IIIII-of-LLLLL.bin`` in index order; ``[]`` when there is none.

    Follows Pythia's convention: ``LLLLL`` is the last index, so ``-of-00020`` means the 21 shards 00000..00020.
    Raises :class:`DataError` (its message names the convention) when the shards disagree on ``LLLLL``, an index
    appears twice (e.g. ``-7-`` and ``-00007-``), lies above ``LLLLL`` or is missing, including a set whose
    indices stop at ``LLLLL - 1`` (``of`` read as a count): such a set is refused, not read one shard short.
    """
    prefix = strip_prefix(path_prefix)
    entries = shard_files(prefix)
    if not entries:
        return []
    lasts = sorted({last for _, last, _ in entries})
    if len(lasts) != 1:
        raise DataError(
            f"shards of {prefix!r} mix several -of- totals {['-of-%05d' % x for x in lasts]}; one set carries one "
            f"last index, remove the stray files; {SHARD_CONVENTION}"
        )
    last = lasts[0]
    found: Dict[int, str] = {}
    for i, _, name in entries:
        if i in found:
            raise DataError(f"duplicate shard {i:05d} of {prefix!r}: {found[i]!r} and {name!r}; {SHARD_CONVENTION}")
        found[i] = name
    above = sorted(i for i in found if i > last)
    if above:
        raise DataError(
            f"shards of {prefix!r} with an index above the last index {last:05d}: {format_indices(above)}; "
            f"{SHARD_CONVENTION}"
        )
    missing = sorted(set(range(last + 1)) - set(found))
    if missing == [last]:
        raise DataError(
            f"shard set of {prefix!r} stops at -{last - 1:05d}-of-{last:05d}: the final shard "
            f"-{last:05d}-of-{last:05d}.bin is missing, or the set was named with -of- as the shard count "
            f"(rename a complete set of {last} shards to -of-{last - 1:05d}); {SHARD_CONVENTION}"
        )
    if missing:
        raise DataError(
            f"incomplete shard set for {prefix!r}: -of-{last:05d} means {last + 1} shards 00000..{last:05d}, "
            f"missing {format_indices(missing)}; {SHARD_CONVENTION}"
        )
    directory = os.path.dirname(prefix) or "."
    return [os.path.join(directory, found[i]) for i in range(last + 1)]
