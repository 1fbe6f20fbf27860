"""Train the content classifier's model on the training half of the labelled set and write its weights and manifest
(``mda_fast/data/content_model.npz`` / ``.json``); deterministic (seeded pieces and batches, one thread).

    python scripts/train_content_model.py [--out-dir mda_fast/data]

Then bump ``CLASSIFIER_VERSION`` in ``mda_fast/data/content.py`` if the weights changed, and measure
(``python benchmarks/bench_categorize.py --accuracy-only``).
"""

import argparse
import os
import time

from mda_fast.data.content_train import HYPER, train_and_save
from mda_fast.data.labelled_set import labelled_documents


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "mda_fast", "data"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    docs = labelled_documents(split="train")
    m = train_and_save(
        docs,
        os.path.join(args.out_dir, "content_model.npz"),
        os.path.join(args.out_dir, "content_model.json"),
        hyper=HYPER,
    )
    print(f"{len(docs)} training documents, {m['n_pieces']} pieces, weights {m['weights_sha256']}, "
          f"training set {m['training_set_sha256']}, {time.perf_counter() - t0:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
