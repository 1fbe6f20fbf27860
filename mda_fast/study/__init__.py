"""The study layer: statistics of the scores, tables, plots, the report, interventions, findings text.

``stats`` (pure numpy), ``tables`` (top/bottom table, ``top.csv``), ``analyze`` (``analysis.json``), ``plots`` and
``intervention_plots`` (PNG), ``report`` (+ ``report_sections``, ``report_html``), ``interventions`` (selection,
evaluation, the one summary, runner), ``findings``.
"""
