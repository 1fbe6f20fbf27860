"""Old path of the HTML report: :mod:`mda_fast.study.report`."""

from .study.report import EOD_MARKER, render_report, write_report  # noqa: F401

__all__ = ["write_report", "render_report"]
