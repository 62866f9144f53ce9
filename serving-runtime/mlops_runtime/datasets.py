"""Datasets of the reference trainer and the holdout evaluator: load a table from a URI, digest it.

Supported sources (see ``docs/training.md``):

* ``sklearn://<name>`` (alias ``builtin://<name>``): a toy dataset bundled with scikit-learn
  (``iris``, ``wine``, ``breast_cancer``, ``digits``), as a frame whose label column
  is ``target`` (class names instead of numbers where scikit-learn has them);
* anything fsspec can open: a local path, ``file://``, ``http(s)://``, ``s3://``, ... holding
  CSV (default), Parquet or JSON lines, chosen by the file extension;
* a file tracked by DVC: ``repo`` (git URL or local path), ``path`` and ``rev``, read through
  ``dvc.api`` (the ``dvc`` extra).

The **digest** is ``md5:<hex>`` of the file's bytes — the same md5 DVC records for the file — or,
for scikit-learn datasets, of the frame rendered as CSV. Two revisions of a dataset give two
digests; the same bytes always give the same digest.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SKLEARN_SCHEMES = ("sklearn", "builtin")
SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits")
#: Refuse to read more than this many bytes (the reference trainer holds data in memory).
MAX_BYTES = 512 * 1024 * 1024


class DatasetError(Exception):
    """The dataset cannot be found, opened or parsed; the message says which and why."""


@dataclass(frozen=True)
class DvcLocation:
    """A file in a DVC repository at a git revision."""

    repo: str
    path: str
    rev: str | None = None


@dataclass
class LoadedDataset:
    """A dataset as the trainer uses it."""

    frame: pd.DataFrame
    uri: str
    name: str
    digest: str
    version: str | None = None
    default_target: str | None = None
    #: scikit-learn's class names in label-code order (the label column holds these names).
    class_names: tuple[str, ...] | None = None

    @property
    def digest_hex(self) -> str:
        """The digest without its ``md5:`` prefix (what MLflow's dataset input stores)."""
        return self.digest.split(":", 1)[-1]


def md5_digest(data: bytes) -> str:
    """``md5:<hex>`` of ``data``."""
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


def split_scheme(uri: str) -> tuple[str | None, str]:
    """``("s3", "bucket/key")`` for ``s3://bucket/key``; ``(None, uri)`` for plain paths."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        return scheme.lower(), rest
    return None, uri


def _known_fsspec_protocols() -> set[str]:
    from fsspec.registry import known_implementations, registry

    return set(known_implementations) | set(registry)


def check_uri(uri: str) -> None:
    """Raise :class:`DatasetError` when no loader knows the URI's scheme."""
    scheme, rest = split_scheme(uri)
    if not uri.strip():
        raise DatasetError("dataset URI is empty")
    if scheme in SKLEARN_SCHEMES:
        if rest not in SKLEARN_DATASETS:
            raise DatasetError(
                f"unknown scikit-learn dataset {rest!r} in {uri!r}; "
                f"known: {', '.join(SKLEARN_DATASETS)}"
            )
        return
    if scheme is not None and scheme not in _known_fsspec_protocols():
        raise DatasetError(
            f"unknown dataset URI scheme {scheme!r} in {uri!r}; use sklearn://<name>, a path, "
            "file://, http(s):// or another fsspec protocol"
        )


def _parse(data: bytes, name: str, where: str) -> pd.DataFrame:
    import pandas as pd

    suffix = PurePosixPath(name.split("?", 1)[0]).suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(io.BytesIO(data))
        elif suffix in (".json", ".jsonl", ".ndjson"):
            frame = pd.read_json(io.BytesIO(data), lines=suffix != ".json")
        else:
            frame = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises many kinds for unreadable data
        raise DatasetError(f"cannot parse dataset {where}: {type(exc).__name__}: {exc}") from exc
    if frame.empty or frame.shape[1] < 2:
        raise DatasetError(
            f"dataset {where} has no usable table ({frame.shape[0]} rows, "
            f"{frame.shape[1]} columns; need a label column and at least one feature)"
        )
    return frame


def _load_sklearn(uri: str, name: str) -> tuple[pd.DataFrame, bytes, tuple[str, ...] | None]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = bunch.frame.copy()
    names = getattr(bunch, "target_names", None)
    class_names = None
    if names is not None and len(names) and frame["target"].dtype.kind in "iu":
        class_names = tuple(str(n) for n in names)
        frame["target"] = [class_names[i] for i in frame["target"]]
    return frame, frame.to_csv(index=False).encode(), class_names


def _read_fsspec(uri: str) -> bytes:
    import fsspec

    try:
        with fsspec.open(uri, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {uri!r} not found") from exc
    except Exception as exc:
        raise DatasetError(f"cannot open dataset {uri!r}: {type(exc).__name__}: {exc}") from exc
    if len(data) > MAX_BYTES:
        raise DatasetError(f"dataset {uri!r} is larger than {MAX_BYTES} bytes")
    return data


def _read_dvc(loc: DvcLocation) -> bytes:
    try:
        import dvc.api
    except ImportError as exc:
        raise DatasetError(
            "dataset.dvc needs DVC in the training image (pip install 'mlops-operator[dvc]')"
        ) from exc
    where = f"{loc.path!r} in DVC repo {loc.repo!r} at rev {loc.rev or 'HEAD'!r}"
    try:
        data = dvc.api.read(loc.path, repo=loc.repo, rev=loc.rev, mode="rb")
    except Exception as exc:  # dvc raises its own hierarchy plus git/OS errors
        raise DatasetError(f"cannot read {where}: {type(exc).__name__}: {exc}") from exc
    return bytes(data)


def load_dataset(
    uri: str | None, version: str | None = None, dvc: DvcLocation | None = None
) -> LoadedDataset:
    """Load the dataset of ``uri`` (or of ``dvc``, which takes precedence) with its digest."""
    if dvc is not None:
        data = _read_dvc(dvc)
        shown = uri or f"dvc://{dvc.repo}#{dvc.path}@{dvc.rev or 'HEAD'}"
        frame = _parse(data, dvc.path, shown)
        name = PurePosixPath(dvc.path).stem or "dataset"
        return LoadedDataset(frame, shown, name, md5_digest(data), version or dvc.rev)
    if not uri:
        raise DatasetError("no dataset given (set spec.dataset.uri or --dataset)")
    check_uri(uri)
    scheme, rest = split_scheme(uri)
    if scheme in SKLEARN_SCHEMES:
        frame, data, class_names = _load_sklearn(uri, rest)
        return LoadedDataset(frame, uri, rest, md5_digest(data), version, "target", class_names)
    data = _read_fsspec(uri)
    frame = _parse(data, rest, repr(uri))
    name = PurePosixPath(rest.split("?", 1)[0]).stem or "dataset"
    return LoadedDataset(frame, uri, name, md5_digest(data), version)
