"""``python -m mlops_localstack.node``."""

import sys

from .standin import main

sys.exit(main())
