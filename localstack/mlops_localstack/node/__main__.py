"""``python -m mlops_localstack.node``."""

import sys

from .cli import main

sys.exit(main())
