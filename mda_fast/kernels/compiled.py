"""The compiled backends ("cpu", "cuda"): one implementation over ``mda_fast._C``, parametrised by the runner.

``_C`` is one core (per-sample G_n = Σ_t m_t y_t x̃_tᵀ, tile by tile) with four epilogues (modes); it takes raw
pointers, strides and, on CUDA, the stream. ``CompiledBackend`` turns validated tensors (``validate.py``) into
the block table; the runner decides where the core runs:

* ``cpu``  — ``_C.cpu_run`` (C++/OpenMP); its score epilogue writes every S entry;
* ``cuda`` — ``_C.cuda_run`` on torch's current stream (tensor cores); its score epilogue adds into S.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import reference
from .validate import mask_as_float

_DTYPE_CODE = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
_module = None


def ext():
    """The compiled module ``mda_fast._C`` (imported lazily; ImportError when it was not built)."""
    global _module
    if _module is None:
        from mda_fast import _C  # noqa: PLC0415

        _module = _C
    return _module


def dtype_code(dtype: torch.dtype) -> int:
    try:
        return _DTYPE_CODE[dtype]
    except KeyError:
        raise TypeError(f"the compiled kernels take float32, bfloat16 or float16 tokens, got {dtype}") from None


def operand(t: torch.Tensor, bias: bool = False) -> tuple:
    """(ptr, stride_n, stride_t, width, bias) of a token tensor [N, T, width] with unit last stride."""
    return (t.data_ptr(), t.stride(0), t.stride(1), t.shape[2], bool(bias))


def ptr(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else t.data_ptr()


def run_cpu(mode, dtype, tab, mask, N, T, K, S, device) -> None:
    ext().cpu_run(mode, dtype, tab, ptr(mask), N, T, K, S)


def run_cuda(mode, dtype, tab, mask, N, T, K, S, device) -> None:
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        ext().cuda_run(mode, dtype, tab, ptr(mask), N, T, K, S, stream)


def _cpu_available() -> bool:
    try:
        ext()
    except ImportError:
        return False
    return True


def _cuda_available() -> bool:
    """``_C`` compiled with CUDA and a CUDA device visible to torch and the runtime."""
    if not _cpu_available():
        return False
    C = ext()
    return bool(C.WITH_CUDA) and torch.cuda.is_available() and C.cuda_device_count() > 0


class CompiledBackend:
    """The four ops over one ``_C`` runner. ``score_adds``: the score epilogue adds into S (so S starts at 0)."""

    def __init__(self, name: str, runner: Callable, available: Callable[[], bool], score_adds: bool):
        self.name, self._runner, self._available, self.score_adds = name, runner, available, score_adds

    def is_available(self) -> bool:
        return self._available()

    def _run(self, mode: str, X: torch.Tensor, tab: list, mask, N: int, T: int, K: int = 0, S: int = 0) -> None:
        C = ext()
        self._runner(getattr(C, "MODE_" + mode), dtype_code(X.dtype), tab, mask_as_float(mask), N, T, K, S, X.device)

    def covariance_accumulate(self, acc, X, mask=None, bias=False):
        """acc [D, D] += Σ_n Σ_t m x̃ x̃ᵀ (the kSum epilogue with a = b = X̃); returns acc."""
        N, T, _ = X.shape
        if N * T:
            op = operand(X, bias)
            self._run("SUM", X, [op + op + (0, acc.data_ptr())], mask, N, T)
        return acc

    def score_blocks(self, blocks, mask=None):
        """S [N, K] fp32 = Σ_b <P_b[k], G_b,n> (kScore epilogue)."""
        X0 = blocks[0].X
        N, T = X0.shape[:2]
        K = blocks[0].P.shape[0]
        if N * T * K == 0:
            return torch.zeros(N, K, dtype=torch.float32, device=X0.device)
        alloc = torch.zeros if self.score_adds else torch.empty  # empty: the kernel writes every entry
        S = alloc(N, K, dtype=torch.float32, device=X0.device)
        tab = [operand(b.Y) + operand(b.X, b.bias) + (b.P.data_ptr(), 0) for b in blocks]
        self._run("SCORE", X0, tab, mask, N, T, K, S.data_ptr())
        return S

    def per_sample_grads(self, X, Y, mask=None, bias=False):
        """G fp32 [N, d_out, d_in + bias], written tile by tile by the kStore epilogue (route B workspace)."""
        N, T, d_in = X.shape
        G = torch.empty(N, Y.shape[2], d_in + int(bias), dtype=torch.float32, device=X.device)
        if N == 0:
            return G
        if T == 0:
            return G.zero_()
        self._run("STORE", X, [operand(Y) + operand(X, bias) + (0, G.data_ptr())], mask, N, T)
        return G

    def square_sum(self, acc, Xr, Yr, mask=None):
        """acc += Σ_n (Yr_nᵀ M Xr_n)² for fp32 rotated tokens, squared in the kSquare epilogue (route A)."""
        N, T, _ = Xr.shape
        if N * T:
            self._run("SQUARE", Xr, [operand(Yr) + operand(Xr) + (0, acc.data_ptr())], mask, N, T)
        return acc

    def eigen_sq_accumulate(self, acc, X, Y, Q_S, Q_A, mask=None, bias=False, route=None):
        """acc += Σ_n (Q_Sᵀ G_n Q_A)², route "A"/"B" (None: ``reference.eigen_sq_route``, the FLOP count)."""
        if X.shape[0] * X.shape[1] == 0:
            return acc
        return reference.eigen_sq_routed(
            acc, X, Y, Q_S, Q_A, mask, bias, store_g=self.per_sample_grads, square_sum=self.square_sum, route=route
        )


cpu = CompiledBackend("cpu", run_cpu, _cpu_available, score_adds=False)
cuda = CompiledBackend("cuda", run_cuda, _cuda_available, score_adds=True)
