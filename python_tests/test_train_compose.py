"""The pure ``compose``: a step's rows and batch-log record after deletions and insertions (no model, no data file)."""

import numpy as np
import pytest

from mda_fast.train.interventions import Insertion, Interventions, compose

B, S = 6, 5  # batch size, seq_len (T = 4)
T = S - 1
STEP = 3
G0 = STEP * B


def base_rows():
    return np.arange(B * S, dtype=np.int64).reshape(B, S) % 200


def raw(v):
    return np.full(S, v, dtype=np.int64)


def test_no_interventions_is_the_batch():
    base = base_rows()
    c = compose(STEP, base, Interventions(), [])
    assert c.rows.dtype == np.int64 and np.array_equal(c.rows, base)
    assert c.record == {
        "step": STEP,
        "indices": list(range(G0, G0 + B)),
        "deleted": [],
        "inserted": [],
        "replaced": [],
        "n_rows": B,
        "denominator": B * T,
    }


def test_delete_drops_rows_and_keeps_the_denominator():
    base = base_rows()
    iv = Interventions(delete={G0 + 1, G0 + 4, G0 + B + 2})  # the last one is another step's sample
    c = compose(STEP, base, iv, [])
    assert np.array_equal(c.rows, base[[0, 2, 3, 5]])
    assert c.record["deleted"] == [G0 + 1, G0 + 4]
    assert c.record["indices"] == [G0, G0 + 2, G0 + 3, G0 + 5]
    assert c.record["n_rows"] == 4 and c.record["denominator"] == B * T


def test_append_adds_rows_after_the_batch_and_ignores_delete():
    base = base_rows()
    iv = Interventions(
        delete={G0},
        insert=[Insertion(STEP, index=G0), Insertion(STEP, tokens=raw(7), name="x"), Insertion(STEP + 1, index=1)],
    )
    c = compose(STEP, base, iv, [base[0], raw(7)])
    assert c.rows.shape == (B - 1 + 2, S)
    assert np.array_equal(c.rows[: B - 1], base[1:])
    assert np.array_equal(c.rows[B - 1], base[0]) and np.array_equal(c.rows[B], raw(7))  # a deleted sample re-inserted
    assert c.record["inserted"] == [
        {"id": f"idx{G0}", "index": G0, "slot": None, "row": B - 1},
        {"id": "x", "index": None, "slot": None, "row": B},
    ]
    assert c.record["deleted"] == [G0] and c.record["replaced"] == []


def test_replace_at_a_position_and_into_a_deleted_slot():
    base = base_rows()
    iv = Interventions(
        delete={G0 + 2},
        insert=[Insertion(STEP, tokens=raw(1), position=4), Insertion(STEP, tokens=raw(2), position=2)],
        insert_mode="replace",
    )
    c = compose(STEP, base, iv, [raw(1), raw(2)])
    assert c.rows.shape == (B, S)  # the deleted slot is filled again
    assert np.array_equal(c.rows[4], raw(1)) and np.array_equal(c.rows[2], raw(2))
    assert c.record["replaced"] == [G0 + 4]  # a deleted sample is not "replaced"
    assert c.record["deleted"] == [G0 + 2]
    assert c.record["indices"] == [G0, G0 + 1, G0 + 3, G0 + 5]
    assert c.record["inserted"] == [
        {"id": "raw1", "index": None, "slot": 2, "row": 2},
        {"id": "raw0", "index": None, "slot": 4, "row": 4},
    ]


def test_replace_draws_free_slots_seeded_by_seed_and_step():
    base = base_rows()

    def make(seed):
        return Interventions(
            delete={G0 + 0},
            insert=[Insertion(STEP, tokens=raw(9)), Insertion(STEP, tokens=raw(8), position=3)],
            insert_mode="replace",
            seed=seed,
        )

    rows = [raw(9), raw(8)]
    rec = compose(STEP, base, make(0), rows).record
    slot = rec["inserted"][0]["slot"] if rec["inserted"][0]["id"] == "raw0" else rec["inserted"][1]["slot"]
    assert slot not in (0, 3)  # neither deleted nor taken
    assert sorted(rec["replaced"]) == sorted([G0 + slot, G0 + 3])
    assert compose(STEP, base, make(0), rows).record == rec
    drawn = {compose(STEP, base, make(s), rows).record["inserted"][0]["slot"] for s in range(12)}
    assert len(drawn) > 1


def test_compose_is_pure():
    base = base_rows()
    before = base.copy()
    iv = Interventions(delete={G0 + 1}, insert=[Insertion(STEP, tokens=raw(5), position=0)], insert_mode="replace")
    a = compose(STEP, base, iv, [raw(5)])
    b = compose(STEP, base, iv, [raw(5)])
    assert np.array_equal(base, before)
    assert np.array_equal(a.rows, b.rows) and a.record == b.record


def test_everything_deleted_gives_no_rows():
    c = compose(STEP, base_rows(), Interventions(delete=range(G0, G0 + B)), [])
    assert c.rows.shape == (0, S) and c.rows.dtype == np.int64 and c.record["n_rows"] == 0


def test_errors():
    base = base_rows()
    iv = Interventions(delete=range(G0, G0 + B), insert=[Insertion(STEP, tokens=raw(1))], insert_mode="replace")
    with pytest.raises(ValueError, match="no free batch slot"):
        compose(STEP, base, iv, [raw(1)])
    with pytest.raises(ValueError, match="insert_rows: expected 1 rows"):
        compose(STEP, base, iv, [])
