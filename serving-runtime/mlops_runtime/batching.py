"""Adaptive micro-batching: concurrent requests are gathered into one ``predict`` call.

No timer is armed when only one request is in flight, so batching adds no latency at one
connection. Under load, a batch waits at most ``max_wait_s`` for requests that are already being
decoded (on a future that arrivals resolve, not in a loop), and never grows beyond
``max_batch_size`` rows. Requests share a ``predict`` call only with requests of the same method,
row width and dtype, so a request of the wrong width fails alone; the worker survives any error
and every request gets an answer. Batches up to ``inline_max_rows`` rows are predicted on the
event loop; larger ones in one predict thread while the worker goes on with the next batch.
``bench/serving/latency_mix.py`` measured the two on 2 busy cores: for a scikit-learn model
the thread hop and the GIL hand-offs cost 1-row requests more than a 512-row predict on the loop
does (docs/serving.md, "Latency under mixed load"), hence the default of 512.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mlops_runtime.errors import InferenceFailed, InvalidRequest, RuntimeServingError

log = logging.getLogger(__name__)

PredictFn = Callable[[str, np.ndarray], np.ndarray]
BatchHook = Callable[[str, np.ndarray, np.ndarray], None]
#: How long the peak of concurrent requests is remembered (see :meth:`MicroBatcher.concurrency`).
PEAK_WINDOW_S = 0.05


#: ``done(result, error)``: the callback of :meth:`MicroBatcher.submit_reply`
Done = Callable[[np.ndarray | None, RuntimeServingError | None], None]


class Reply:
    """Where a prediction goes when it is submitted with a callback: like an asyncio future to
    the batcher, but it calls ``done(result, error)`` at once instead of scheduling callbacks
    for a later turn of the event loop."""

    __slots__ = ("_done", "_finished", "_listed")

    def __init__(self, done: Done, listed: bool = False) -> None:
        self._done = done
        self._finished = False
        self._listed = listed  # hand the result over in a one-element list

    def done(self) -> bool:
        return self._finished

    def set_result(self, result: np.ndarray) -> None:
        self._finish([result] if self._listed else result, None)  # type: ignore[arg-type]

    def set_exception(self, error: RuntimeServingError) -> None:
        self._finish(None, error)

    def _finish(self, result: np.ndarray | None, error: RuntimeServingError | None) -> None:
        self._finished = True
        try:
            self._done(result, error)
        except Exception:  # noqa: BLE001 - one reply must not fail the rest of its batch
            log.exception("answering a prediction failed")


class _Item:
    __slots__ = ("method", "rows", "future")

    def __init__(self, method: str, rows: np.ndarray,
                 future: asyncio.Future[np.ndarray] | Reply) -> None:  # fmt: skip
        self.method = method
        self.rows = rows
        self.future = future


def _as_domain_error(exc: Exception) -> RuntimeServingError:
    if isinstance(exc, RuntimeServingError):
        return exc
    if isinstance(exc, ValueError | TypeError):
        return InvalidRequest(f"the model rejected the input: {exc}")
    return InferenceFailed(f"inference failed: {type(exc).__name__}: {exc}")


class MicroBatcher:
    """Gathers concurrent :meth:`submit` calls into batched calls of ``predict(method, rows)``."""

    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int = 64,
        max_wait_s: float = 0.001,
        inline_max_rows: int = 512,
        on_batch: BatchHook | None = None,
    ) -> None:
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.inline_max_rows = inline_max_rows
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._arrival: asyncio.Future[None] | None = None
        self._offloaded: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self.in_flight = 0
        self.batches = 0
        self._peak = 0
        self._peak_at = 0.0

    def enter(self) -> None:
        """A request has started (it may submit soon); lets batches wait for it under load."""
        self.in_flight += 1
        if self.in_flight >= self._peak:
            self._peak, self._peak_at = self.in_flight, time.perf_counter()

    def concurrency(self) -> int:
        """Requests in flight now, or the most seen in the last ``PEAK_WINDOW_S`` if more.

        Transports that start requests one event-loop turn at a time (grpcio's asyncio server
        does) show only a few in flight at the moment a batch is taken, although many clients
        are waiting to be started; the recent peak says how many to expect."""
        if time.perf_counter() - self._peak_at > PEAK_WINDOW_S:
            self._peak, self._peak_at = self.in_flight, time.perf_counter()
        return max(self.in_flight, self._peak)

    def leave(self) -> None:
        """A request has finished."""
        self.in_flight -= 1
        self._nudge()

    async def submit(self, method: str, rows: np.ndarray) -> np.ndarray:
        """Predict ``rows`` with ``method`` as part of the next batch."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._add(_Item(method, rows, future))
        return await future

    def submit_reply(self, method: str, rows: np.ndarray, done: Done, listed: bool = False) -> None:
        """:meth:`submit` for callers that answer from a callback (called on the event loop):
        ``done(result, None)`` or ``done(None, error)`` runs as soon as the batch is predicted,
        in the batcher's own turn of the loop (``listed``: ``done([result], None)``)."""
        self._add(_Item(method, rows, Reply(done, listed)))

    def _add(self, item: _Item) -> None:
        if self._task is None or self._task.done():
            self._start()
        assert self._wakeup is not None
        self._queue.append(item)
        self._wakeup.set()
        self._nudge()

    def _nudge(self) -> None:
        """Wake a batch that is waiting for requests (one arrived, or one left without)."""
        arrival = self._arrival
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    def _start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Finish what is queued and what is predicting in the thread, then stop the worker."""
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.001)
        if self._offloaded:
            await asyncio.gather(*self._offloaded, return_exceptions=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                items: list[_Item] = []
                try:
                    await self._gather()
                    items = self._take()
                    self._run_batch(items)
                except Exception as exc:  # noqa: BLE001 - the worker outlives any batch
                    log.exception("micro-batch failed")
                    for item in items:
                        self._fail(item, exc)

    async def _gather(self) -> None:
        """Under load, give requests in flight (or, by the recent peak, about to be) a moment to
        join the batch; never longer than ``max_wait_s``, never beyond ``max_batch_size`` rows.
        It waits on a future that :meth:`submit` and :meth:`leave` resolve, not in a loop."""
        expected = self.concurrency()
        if expected <= 1 or self.max_wait_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while (
            (self.in_flight > len(self._queue) or len(self._queue) < expected)
            and sum(i.rows.shape[0] for i in self._queue) < self.max_batch_size
            and loop.time() < deadline
        ):
            self._arrival = loop.create_future()
            timer = loop.call_at(deadline, self._nudge)
            try:
                await self._arrival
            finally:
                timer.cancel()
                self._arrival = None

    def _take(self) -> list[_Item]:
        items: list[_Item] = []
        rows = 0
        while self._queue:
            n = self._queue[0].rows.shape[0]
            if items and rows + n > self.max_batch_size:
                break
            items.append(self._queue.popleft())
            rows += n
        return items

    def _run_batch(self, items: list[_Item]) -> None:
        """Predict ``items`` in groups that can share a call: same method, same row width and
        dtype (a model without a declared width may get rows of several widths; each group is
        answered on its own, so a wrong width fails only its own requests). Groups up to
        ``inline_max_rows`` rows are predicted here, larger ones in the predict thread while
        this worker goes on with the next batch."""
        groups: dict[tuple[object, ...], list[_Item]] = {}
        for item in items:
            if not item.future.done():
                key = (item.method, item.rows.shape[1:], item.rows.dtype)
                groups.setdefault(key, []).append(item)
        for (method, *_), group in groups.items():
            rows = group[0].rows if len(group) == 1 else np.concatenate([i.rows for i in group])
            if rows.shape[0] > self.inline_max_rows:
                task = asyncio.get_running_loop().create_task(self._offload(method, group, rows))
                self._offloaded.add(task)
                task.add_done_callback(self._offloaded.discard)
            else:
                self._inline(method, group, rows)

    def _inline(self, method: str, group: list[_Item], rows: np.ndarray) -> None:
        try:
            result = self._predicted(method, rows)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request(s)
            if len(group) == 1:
                self._fail(group[0], exc)
            else:
                for item in group:
                    self._inline(method, [item], item.rows)
            return
        self._settle(method, group, rows, result)

    async def _offload(self, method: str, group: list[_Item], rows: np.ndarray) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="mlops-predict")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, self._predicted, method, rows)
        except Exception as exc:  # noqa: BLE001 - isolate the failing request(s)
            if len(group) == 1:
                self._fail(group[0], exc)
            else:
                for item in group:
                    await self._offload(method, [item], item.rows)
            return
        self._settle(method, group, rows, result)

    def _predicted(self, method: str, rows: np.ndarray) -> np.ndarray:
        result = np.asarray(self._predict(method, rows))
        if result.shape[:1] != rows.shape[:1]:
            raise InferenceFailed(f"the model returned {result.shape[0]} rows for {rows.shape[0]}")
        return result

    def _settle(
        self, method: str, group: list[_Item], rows: np.ndarray, result: np.ndarray
    ) -> None:
        self.batches += 1
        if self._on_batch is not None:
            try:
                self._on_batch(method, rows, result)
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                log.exception("batch hook failed")
        offset = 0
        for item in group:
            n = item.rows.shape[0]
            if not item.future.done():
                item.future.set_result(result[offset : offset + n])
            offset += n

    @staticmethod
    def _fail(item: _Item, exc: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(_as_domain_error(exc))
