"""The CPU demo (``mda_fast.stages.demo``)."""

from .stages.demo import (  # noqa: F401
    check_demo_out,
    choose_window,
    latest_checkpoint,
    prepare_corpus,
    run_demo,
    stop_step,
    train_base,
)
