"""The study layer: statistics of the scores, tables, plots, the report, interventions, findings text."""
