"""kopf handlers: importing this package registers the startup handler and every controller.

Each controller module follows the one shape of :mod:`mlops_operator.controller`.
"""

from . import modeldeployment, modelversion, startup, trainingrun

__all__ = ["modeldeployment", "modelversion", "startup", "trainingrun"]
