"""kopf handlers. Importing this package registers every handler with kopf's default registry."""

from . import startup  # noqa: F401

# resource handlers register themselves on import; each module owns one kind
for _name in ("trainingrun", "modelversion", "modeldeployment"):
    try:
        __import__(f"{__name__}.{_name}")
    except ModuleNotFoundError as _exc:  # a kind not built yet
        if _exc.name != f"{__name__}.{_name}":
            raise
