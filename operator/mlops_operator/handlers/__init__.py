"""kopf handlers: importing this package registers the startup handler and every controller.

Each controller module follows the one shape of :mod:`mlops_operator.controller`.
"""

from . import modelversion, startup, trainingrun

__all__ = ["modelversion", "startup", "trainingrun"]
