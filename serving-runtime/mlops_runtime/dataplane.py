"""The transport-agnostic data plane: model state, metadata, readiness and inference.

It takes and returns bytes/dicts and raises :mod:`mlops_runtime.errors`; the REST adapter in
:mod:`mlops_runtime.rest` is a thin layer over it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mlops_runtime import __version__, codec
from mlops_runtime.batching import Done, MicroBatcher
from mlops_runtime.drift import DriftMonitor
from mlops_runtime.errors import ModelNotFound, ModelNotReady, RuntimeServingError
from mlops_runtime.metrics import RuntimeMetrics
from mlops_runtime.model import LoadedModel, ModelLoadError, load_model, parse_model_uri
from mlops_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

SERVER_NAME = "mlops-runtime"

#: ``done(results, error)``: the callback of :meth:`DataPlane.submit`
Answer = Callable[[list[np.ndarray] | None, RuntimeServingError | None], None]


class DataPlane:
    """One served model and everything needed to answer Open Inference Protocol calls."""

    def __init__(self, settings: RuntimeSettings, metrics: RuntimeMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or RuntimeMetrics(settings.variant)
        self.model: LoadedModel | None = None
        self.load_error: str | None = None
        self.drift: DriftMonitor | None = None
        self.batcher = MicroBatcher(
            self._predict,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000.0,
            inline_max_rows=settings.inline_predict_max_rows,
            on_batch=self._on_batch,
        )
        self.expected_name = settings.model_name or self._name_from_uri(settings.model_uri)
        self.metrics.set_model(self.expected_name, None)
        self.metrics.set_loaded(False)
        self._known_outputs: frozenset[str] = frozenset()
        self._ready_listeners: list[Callable[[bool], None]] = []

    def on_ready_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(ready)`` now and whenever readiness changes (e.g. gRPC health)."""
        self._ready_listeners.append(listener)
        listener(self.ready())

    def _notify_ready(self) -> None:
        for listener in self._ready_listeners:
            try:
                listener(self.ready())
            except Exception:  # noqa: BLE001 - a listener must never break loading
                log.exception("readiness listener failed")

    @staticmethod
    def _name_from_uri(uri: str | None) -> str:
        if not uri:
            return "model"
        try:
            return parse_model_uri(uri).name or "model"
        except ModelLoadError:
            return "model"

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the model (in a thread, with retries). On failure stay not-ready with a reason."""
        uri = self.settings.model_uri
        if not uri:
            self.load_error = "no model configured (set MLOPS_RUNTIME_MODEL_URI)"
            log.error(self.load_error)
            return
        started = time.perf_counter()
        for attempt in range(1, self.settings.load_retries + 1):
            try:
                model = await asyncio.to_thread(load_model, uri, self.settings.model_name)
            except ModelLoadError as exc:
                self.load_error = str(exc)
                log.error("model load attempt %d/%d failed: %s", attempt,
                          self.settings.load_retries, exc)  # fmt: skip
                if attempt < self.settings.load_retries:
                    await asyncio.sleep(min(2.0**attempt, 10.0))
                continue
            self.install(model, time.perf_counter() - started)
            if self.settings.gc_freeze:
                # Move everything loaded so far (MLflow, pandas, the model) out of the cyclic
                # GC's reach: full collections then stay short, which keeps tail latency down.
                gc.collect()
                gc.freeze()
            return

    def install(self, model: LoadedModel, load_seconds: float = 0.0) -> None:
        """Make ``model`` the served model (also used by tests with in-memory models)."""
        self.model = model
        self.load_error = None
        self._known_outputs = frozenset(model.methods)
        self.metrics.set_model(model.name, model.version)
        self.metrics.set_loaded(True, load_seconds)
        if model.baseline is not None:
            self.drift = DriftMonitor(model.baseline, window=self.settings.drift_window)
            self.metrics.set_drift_source(self.drift.scores)
        self._notify_ready()
        log.info("serving %s version %s (%s) from %s in %.2fs", model.name, model.version,
                 model.platform, model.source_uri, load_seconds)  # fmt: skip

    async def close(self) -> None:
        """Drain queued predictions."""
        await self.batcher.close()

    # -- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        """The process is up."""
        return True

    def ready(self) -> bool:
        """The model is loaded."""
        return self.model is not None

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(codec.EXTENSIONS)}

    def _served(self, name: str, version: str | None) -> LoadedModel:
        model = self.model
        if model is None:
            if name != self.expected_name:
                raise ModelNotFound(name, version)
            raise ModelNotReady(f"model {name} is not ready: {self.load_error or 'loading'}")
        if name != model.name or (version is not None and version != model.version):
            raise ModelNotFound(name, version)
        return model

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """``GET /v2/models/{name}[/versions/{version}]``; while not loaded, reports why."""
        if self.model is None and name == self.expected_name and version is None:
            return {"name": name, "versions": [], "platform": "", "inputs": [], "outputs": [],
                    "parameters": {"ready": False, "reason": self.load_error or "loading",
                                   "source": self.settings.model_uri}}  # fmt: skip
        model = self._served(name, version)
        return {
            "name": model.name,
            "versions": [model.version] if model.version else [],
            "platform": model.platform,
            "inputs": model.inputs,
            "outputs": model.outputs,
            "parameters": {**model.parameters, "ready": True},
        }

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether this model (version) is ready; unknown names raise :class:`ModelNotFound`."""
        try:
            self._served(name, version)
        except ModelNotReady:
            return False
        return True

    # -- inference ---------------------------------------------------------------------------

    def _predict(self, method: str, rows: np.ndarray) -> np.ndarray:
        assert self.model is not None
        return self.model.methods[method](rows)

    def _on_batch(self, method: str, rows: np.ndarray, result: np.ndarray) -> None:
        self.metrics.observe_batch(rows.shape[0])
        if method == "predict":
            self.metrics.observe_predictions(result)
            if self.drift is not None:
                self.drift.observe(rows)

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: int | None = None
    ) -> tuple[bytes, int | None]:
        """REST ``POST .../infer``: decode (JSON, or JSON + binary tensor data when
        ``header_length`` is given), predict through the micro-batcher, encode. Returns the body
        and the ``Inference-Header-Content-Length`` of the response (``None``: plain JSON)."""
        model, request = self.decode(name, version, body, header_length)
        results = await self.predict(request)
        return self.encode(model, request, results)

    def decode(
        self, name: str, version: str | None, body: bytes, header_length: int | None = None
    ) -> tuple[LoadedModel, codec.DecodedRequest]:
        """The first half of :meth:`infer`: the model that answers, and the decoded request."""
        model = self._served(name, version)
        return model, codec.decode_infer(body, model.spec, self._known_outputs, header_length)

    def submit(self, request: codec.DecodedRequest, done: Answer) -> None:
        """The predictions of :meth:`infer` for transports that answer from a callback instead
        of awaiting: ``done(results, None)`` (one array per requested output) or
        ``done(None, error)``, called once, on the event loop."""
        outputs, rows = request.outputs, request.rows
        if len(outputs) == 1:
            self.batcher.submit_reply(outputs[0], rows, done, listed=True)  # type: ignore[arg-type]
            return
        results: list[Any] = [None] * len(outputs)
        errors: list[RuntimeServingError] = []
        left = [len(outputs)]

        def each(i: int) -> Done:
            def reply(result: np.ndarray | None, error: RuntimeServingError | None) -> None:
                if error is not None:
                    errors.append(error)
                results[i] = result
                left[0] -= 1
                if not left[0]:
                    done(None if errors else results, errors[0] if errors else None)

            return reply

        for i, output in enumerate(outputs):
            self.batcher.submit_reply(output, rows, each(i))

    @staticmethod
    def encode(
        model: LoadedModel, request: codec.DecodedRequest, results: list[np.ndarray]
    ) -> tuple[bytes, int | None]:
        """The last half of :meth:`infer`: the response body and its JSON header length."""
        return codec.encode_infer(model.name, model.version, request, results)

    def served(self, name: str, version: str | None) -> LoadedModel:
        """The model that answers ``name`` (``version``); raises 404/503 domain errors."""
        return self._served(name, version)

    @property
    def known_outputs(self) -> frozenset[str]:
        """Output names the served model has (``predict``, ``predict_proba``)."""
        return self._known_outputs

    async def predict(self, request: codec.DecodedRequest) -> list[np.ndarray]:
        """One result array per requested output, through the micro-batcher (every transport)."""
        return [await self.batcher.submit(output, request.rows) for output in request.outputs]

    async def predict_instances(self, body: bytes) -> bytes:
        """``POST /predict`` with ``{"instances": [...]}``."""
        model = self._served(self.model.name if self.model else self.expected_name, None)
        rows = codec.decode_instances(body, model.spec)
        result = await self.batcher.submit("predict", rows)
        numeric = result.dtype.kind in "biuf" and result.flags.c_contiguous
        predictions = result if numeric else result.tolist()
        return codec.dumps(
            {"predictions": predictions, "model_name": model.name, "model_version": model.version}
        )
