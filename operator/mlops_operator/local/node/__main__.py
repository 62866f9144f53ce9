"""``python -m mlops_operator.local.node``."""

import sys

from .standin import main

sys.exit(main())
