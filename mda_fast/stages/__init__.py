"""The CLI stages, one file per command (localize, fit, score, analyze, report, intervene, shards, corpus, train,
demo, study, augment), the checks before work (``checks``), what a stage reads (``inputs``), what the end-to-end
commands share (``runs``) and the torchrun machinery (``distributed``, ``topk``). Nothing is imported here."""
