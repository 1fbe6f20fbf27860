"""The CLI stages, one file each (localize, fit, score, analyze, report, intervene, shards, demo), the checks
before work (``checks``), what a stage reads (``inputs``) and the output directory (``io``).

Nothing is imported here, so that ``stages.io`` stays a leaf any module can use.
"""
