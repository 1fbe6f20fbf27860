"""``python -m mda_fast``: the ``mda-fast`` command line (for torchrun and cluster launchers).

Under torchrun (``WORLD_SIZE`` set) the entry point is wrapped in torch's ``record``, so an uncaught error of a
rank is written to torchrun's error file and reported with its rank."""

import os
import sys

from .cli import main

if os.environ.get("WORLD_SIZE"):
    from torch.distributed.elastic.multiprocessing.errors import record

    main = record(main)
sys.exit(main())
