"""``python -m common.probe [FILE] [--readme]``: the probe table (see :func:`common.probe.main`)."""

import sys

from common.probe import main

sys.exit(main())
