"""Blocks made of several output segments: X is the one input slice, Y the segments' output gradients concatenated
in segment order, so ``Σ_t y_t x̃_tᵀ`` is the gradient of the stacked weight slice (``block_weight``)."""

import pytest
import torch
from conftest import make_tiny

from mda_fast.adapters import Segment
from mda_fast.core.capture import block_grad, capture, loss_objective, sequence_loss, split_rows
from mda_fast.core.heads import Block, HeadSpec, block_weight, head_blocks


def _autograd(model, inputs, labels, blocks):
    for p in model.parameters():
        p.requires_grad_(True)
    out = []
    try:
        for n in range(inputs.shape[0]):
            model.zero_grad(set_to_none=True)
            sequence_loss(model(input_ids=inputs[n : n + 1]).logits, labels[n : n + 1]).sum().backward()
            out.append({b.name: block_weight(model, b, grad=True).clone() for b in blocks})
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
    return out


def test_segments_out_of_order_and_across_heads_match_autograd():
    model = make_tiny(n_layers=2).double()
    dh = 8
    blocks = [  # head 2's k rows before head 0's q rows; and a block whose rows come from two heads
        Block(
            "swap",
            1,
            (Segment("query_key_value", 2 * 3 * dh + dh, 2 * 3 * dh + 2 * dh), Segment("query_key_value", 0, dh)),
            0,
            32,
            True,
        ),
        Block(
            "two",
            1,
            (Segment("query_key_value", 5, 9), Segment("query_key_value", 3 * dh + 1, 3 * dh + 4)),
            4,
            20,
            False,
        ),
        Block("one_segment", 0, (Segment("query_key_value", 0, dh),), 0, 32, False),
    ]
    rows = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(0))
    inputs, labels = split_rows(rows)
    res = capture(model, inputs, blocks, loss_objective(labels))
    ref = _autograd(model, inputs, labels, blocks)
    for b in blocks:
        assert res.y(b).shape[-1] == b.d_out == block_weight(model, b).shape[0]
        g = block_grad(res.x(b), res.y(b), b.bias)
        for n in range(rows.shape[0]):
            torch.testing.assert_close(g[n], ref[n][b.name], rtol=1e-10, atol=1e-12)
    # a mutation: the same segments in the other order give a different (wrong) gradient for the stacked slice
    swapped = Block("swap", 1, tuple(reversed(blocks[0].segments)), 0, 32, True)
    assert not torch.allclose(block_grad(res.x(swapped), res.y(swapped), True)[0], ref[0]["swap"])


def test_neox_qk_block_is_q_rows_then_k_rows_of_the_head():
    model = make_tiny(n_layers=1)
    qk = head_blocks(model, HeadSpec(0, 1))[0]
    assert qk.segments == (Segment("query_key_value", 24, 32), Segment("query_key_value", 32, 40))
    assert qk.runs() == (Segment("query_key_value", 24, 40),) and qk.shared_by == (1,)


def test_block_dict_round_trip_and_legacy_form():
    b = Block("x", 1, (Segment("q_proj", 0, 4), Segment("k_proj", 8, 12)), 0, 16, True, (2, 3))
    assert Block.from_dict(b.to_dict()) == b
    legacy = {
        "name": "y",
        "layer": 0,
        "module": "dense",
        "out_start": 0,
        "out_stop": 32,
        "in_start": 8,
        "in_stop": 16,
        "bias": False,
    }
    assert Block.from_dict(legacy) == Block("y", 0, (Segment("dense", 0, 32),), 8, 16, False)
    with pytest.raises(ValueError):
        Segment("q_proj", 4, 4)
