"""``python -m mlref_testing.probe [FILE] [--readme]``: the probe table (see :func:`mlref_testing.probe.main`)."""

import sys

from mlref_testing.probe import main

sys.exit(main())
