"""The termination message of a Job's container: the one-line reason a Kubernetes Pod shows."""

from __future__ import annotations

import os

TERMINATION_LOG = "/dev/termination-log"


def write_termination_message(text: str) -> None:
    """Write ``text`` (its last 4000 characters) where Kubernetes — or the local stack's node
    stand-in, through ``MLOPS_LOCAL_TERMINATION_LOG`` — reads the termination message.

    Outside a container (no ``/dev/termination-log``) nothing is written.
    """
    path = os.environ.get("MLOPS_LOCAL_TERMINATION_LOG") or TERMINATION_LOG
    if path == TERMINATION_LOG and not os.path.exists(path):
        return  # not in a Kubernetes container
    try:
        with open(path, "w") as fh:
            fh.write(text[-4000:])
    except OSError:
        pass
