"""Adaptive micro-batching: concurrent requests are gathered into one ``predict`` call.

No timer is armed when only one request is in flight, so batching adds no latency at one
connection. Under load, a batch waits at most ``max_wait_s`` for requests that are already being
decoded, and never grows beyond ``max_batch_size`` rows. Small batches are predicted on the event
loop (a scikit-learn predict on a few rows is cheaper than a thread hop); large ones in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from mlops_runtime.errors import InferenceFailed, InvalidRequest, RuntimeServingError

log = logging.getLogger(__name__)

PredictFn = Callable[[str, np.ndarray], np.ndarray]
BatchHook = Callable[[str, np.ndarray, np.ndarray], None]
#: How long the peak of concurrent requests is remembered (see :meth:`MicroBatcher.concurrency`).
PEAK_WINDOW_S = 0.05
#: Sleep while waiting for expected requests that have not started yet.
IO_WAIT_S = 0.0002


class _Item:
    __slots__ = ("method", "rows", "future")

    def __init__(self, method: str, rows: np.ndarray, future: asyncio.Future[np.ndarray]) -> None:
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

    async def submit(self, method: str, rows: np.ndarray) -> np.ndarray:
        """Predict ``rows`` with ``method`` as part of the next batch."""
        if self._task is None or self._task.done():
            self._start()
        assert self._wakeup is not None
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(method, rows, future))
        self._wakeup.set()
        return await future

    def _start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        while self._queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._gather()
                await self._run_batch(self._take())

    async def _gather(self) -> None:
        """Under load, give requests in flight (or, by the recent peak, about to be) a moment to
        join the batch; never longer than ``max_wait_s``, never beyond ``max_batch_size`` rows."""
        expected = self.concurrency()
        if expected <= 1 or self.max_wait_s <= 0:
            return
        deadline = time.perf_counter() + self.max_wait_s
        while (
            (self.in_flight > len(self._queue) or len(self._queue) < expected)
            and sum(i.rows.shape[0] for i in self._queue) < self.max_batch_size
            and time.perf_counter() < deadline
        ):
            # requests being decoded need loop turns; requests not started yet need the loop to
            # wait for I/O (a short real sleep, which also lets grpc's poller thread run)
            await asyncio.sleep(0 if self.in_flight > len(self._queue) else IO_WAIT_S)

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

    async def _run_batch(self, items: list[_Item]) -> None:
        by_method: dict[str, list[_Item]] = {}
        for item in items:
            if not item.future.done():
                by_method.setdefault(item.method, []).append(item)
        for method, group in by_method.items():
            rows = group[0].rows if len(group) == 1 else np.concatenate([i.rows for i in group])
            try:
                result = await self._call(method, rows)
            except Exception as exc:  # noqa: BLE001 - isolate the failing request(s)
                if len(group) == 1:
                    self._fail(group[0], exc)
                else:
                    for item in group:
                        await self._run_batch([item])
                continue
            self.batches += 1
            offset = 0
            for item in group:
                n = item.rows.shape[0]
                if not item.future.done():
                    item.future.set_result(result[offset : offset + n])
                offset += n

    async def _call(self, method: str, rows: np.ndarray) -> np.ndarray:
        if rows.shape[0] <= self.inline_max_rows:
            result = self._predict(method, rows)
        else:
            result = await asyncio.to_thread(self._predict, method, rows)
        result = np.asarray(result)
        if result.shape[:1] != rows.shape[:1]:
            raise InferenceFailed(f"the model returned {result.shape[0]} rows for {rows.shape[0]}")
        if self._on_batch is not None:
            try:
                self._on_batch(method, rows, result)
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                log.exception("batch hook failed")
        return result

    @staticmethod
    def _fail(item: _Item, exc: Exception) -> None:
        if not item.future.done():
            item.future.set_exception(_as_domain_error(exc))
