"""The Megatron ``.idx`` format's constants: magic, version, header layout and dtype codes.

``.idx`` layout (little-endian)::

    9 bytes  b"MMIDIDX\\x00\\x00"
    u64      version (1)
    u8       dtype code: 1 u8, 2 i8, 3 i16, 4 i32, 5 i64, 6 f32, 7 f64, 8 u16
    u64      len        (number of sequences)
    u64      doc_count
    i32      sizes[len]        tokens per sequence
    i64      pointers[len]     byte offset of each sequence in the token stream
    i64      doc_idx[doc_count]
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, len, doc_count -> 34 bytes

DTYPE_CODES = {
    1: np.dtype("<u1"),
    2: np.dtype("<i1"),
    3: np.dtype("<i2"),
    4: np.dtype("<i4"),
    5: np.dtype("<i8"),
    6: np.dtype("<f4"),
    7: np.dtype("<f8"),
    8: np.dtype("<u2"),
}
CODE_OF = {dt: code for code, dt in DTYPE_CODES.items()}


def dtype_code(dtype) -> int:
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in CODE_OF:
        raise TypeError(
            f"dtype {np.dtype(dtype)} has no Megatron dtype code; expected one of {sorted(str(d) for d in CODE_OF)}"
        )
    return CODE_OF[dt]
