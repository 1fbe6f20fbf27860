"""One guard against NaN and infinity: ``check_finite`` raises ``NonFiniteError`` naming where they were found.

The check is cheap enough for every score batch: one ``isfinite().all()`` per tensor on the tensor's device and
a single host synchronisation; the per-tensor NaN / inf counts are computed only when the check fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Union

import torch

from ..errors import NonFiniteError

Tensors = Union[torch.Tensor, Mapping[str, torch.Tensor], Iterable[tuple[str, torch.Tensor]]]

_MAX_NAMED = 4  # offending tensors named in a message
_MAX_ROWS = 8  # offending rows named in a message


def _named(values: Tensors) -> list[tuple[str | None, torch.Tensor]]:
    if isinstance(values, torch.Tensor):
        return [(None, values)]
    items = values.items() if isinstance(values, Mapping) else values
    out = []
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"check_finite: {name!r} is a {type(t).__name__}, expected a torch.Tensor")
        out.append((str(name), t))
    return out


def _counts(t: torch.Tensor) -> str:
    return f"{int(torch.isnan(t).sum())} NaN, {int(torch.isinf(t).sum())} inf"


def _bad_rows(t: torch.Tensor, rows: Sequence | None) -> str:
    bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
    labels = [rows[i] if rows is not None else i for i in bad]
    shown = ", ".join(str(r) for r in labels[:_MAX_ROWS])
    more = f" and {len(labels) - _MAX_ROWS} more" if len(labels) > _MAX_ROWS else ""
    return f"row{'s' if len(labels) > 1 else ''} {shown}{more}"


def check_finite(
    values: Tensors, where: str, expected: str = "finite values", cause: str | None = None, rows: Sequence | None = None
) -> None:
    """Raise ``NonFiniteError`` unless every floating-point tensor in ``values`` is finite.

    ``values`` is one tensor, a mapping ``{name: tensor}`` or ``(name, tensor)`` pairs (``model.named_parameters()``).
    The one-line message reads ``non-finite values in {where}: {details}; expected {expected}[; {cause}]`` where
    ``details`` names the offending tensors with their NaN / inf counts; for a single tensor of dim >= 1 it lists
    the offending rows (indices along dim 0, or the matching entries of ``rows``). Integer tensors always pass.
    """
    named = [(n, t) for n, t in _named(values) if t.is_floating_point() or t.is_complex()]
    if not named:
        return
    if rows is not None and (
        len(named) != 1 or named[0][0] is not None or named[0][1].dim() == 0 or len(rows) != named[0][1].shape[0]
    ):
        raise ValueError(f"check_finite: rows must label dim 0 of a single tensor ({len(rows)} labels given)")
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for _, t in named:
        by_device.setdefault(t.device, []).append(torch.isfinite(t).all())
    if all(bool(torch.stack(flags).all()) for flags in by_device.values()):  # one sync per device
        return
    parts = []
    for name, t in named:
        if bool(torch.isfinite(t).all()):
            continue
        if name is None:
            detail = _counts(t) + f" of {t.numel()}"
            parts.append(f"{_bad_rows(t, rows)} ({detail})" if t.dim() >= 1 else f"({detail})")
        else:
            parts.append(f"{name} ({_counts(t)})")
    if len(parts) > _MAX_NAMED:
        parts = parts[:_MAX_NAMED] + [f"and {len(parts) - _MAX_NAMED} more tensors"]
    msg = f"non-finite values in {where}: {', '.join(parts)}; expected {expected}"
    raise NonFiniteError(msg + (f"; {cause}" if cause else ""))


def check_model_finite(model: torch.nn.Module) -> None:
    """``check_finite`` over every parameter of ``model`` (named as in ``named_parameters``)."""
    check_finite(
        model.named_parameters(),
        "the model's parameters",
        expected="finite weights",
        cause="the checkpoint is damaged or its training diverged",
    )
