"""``python -m mda_fast``: the ``mda-fast`` command line (for torchrun and cluster launchers)."""
import sys

from .cli import main

sys.exit(main())
