"""pytest plugin of benchmarks/gpu_check.sh: each test's outcome appended to a JSON-lines file as it ends, so a
stage stopped by its timeout still says which tests passed; and tests an earlier stage ran deselected.

    GPU_CHECK_PROGRESS=out.jsonl GPU_CHECK_DESELECT=a.jsonl,b.jsonl python -m pytest -p gpu_check_pytest ...

(``benchmarks/`` on PYTHONPATH). With pytest-xdist the controller writes the lines; the workers deselect.
"""

from __future__ import annotations

import json
import os

_state = {"path": None}


def _read_ids(paths: str) -> set:
    ids = set()
    for p in filter(None, paths.split(",")):
        if os.path.exists(p):
            with open(p) as fh:
                ids.update(json.loads(line)["nodeid"] for line in fh if line.strip())
    return ids


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) writes the lines
        _state["path"] = os.environ.get("GPU_CHECK_PROGRESS") or None


def pytest_collection_modifyitems(config, items):
    done = _read_ids(os.environ.get("GPU_CHECK_DESELECT", ""))
    if not done:
        return
    keep = [it for it in items if it.nodeid not in done]
    dropped = [it for it in items if it.nodeid in done]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def outcome_of(report) -> str:
    if hasattr(report, "wasxfail"):
        return "xpassed" if report.passed else "xfailed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome  # passed / failed / skipped


def pytest_runtest_logreport(report):
    path = _state["path"]
    if path is None:
        return
    # one line per test: its call, or the setup/teardown that failed or skipped it
    if report.when == "call" or (report.when == "setup" and not report.passed) or (report.failed):
        line = {"nodeid": report.nodeid, "outcome": outcome_of(report), "when": report.when}
        line["seconds"] = round(float(getattr(report, "duration", 0.0)), 4)
        if report.failed:
            crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)
            text = crash or (str(report.longrepr) if report.longrepr is not None else "")
            line["error"] = " ".join(text.split())[:300]  # the assertion / exception message, on one line
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
