"""Adaptive micro-batching gathers concurrent requests into fewer predict calls."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mlops_runtime.batching import MicroBatcher
from mlops_runtime.errors import InvalidRequest


class Recorder:
    """A fake model: predicts the row sum, records the batch sizes it was called with."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[int] = []
        self.fail_on = fail_on

    def __call__(self, method: str, rows: np.ndarray) -> np.ndarray:
        self.calls.append(rows.shape[0])
        if self.fail_on is not None and (rows == self.fail_on).any():
            raise ValueError("bad value")
        return rows.sum(axis=1)


async def _concurrent(batcher: MicroBatcher, blocks: list[np.ndarray]) -> list[np.ndarray]:
    async def one(rows: np.ndarray) -> np.ndarray:
        batcher.enter()
        try:
            await asyncio.sleep(0)  # like a request reading its body
            return await batcher.submit("predict", rows)
        finally:
            batcher.leave()

    return await asyncio.gather(*(one(b) for b in blocks), return_exceptions=True)


async def test_concurrent_requests_share_predict_calls() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.05)
    blocks = [np.full((1, 3), float(i)) for i in range(40)]
    results = await _concurrent(batcher, blocks)
    assert [r.tolist() for r in results] == [[3.0 * i] for i in range(40)]
    assert sum(model.calls) == 40
    assert len(model.calls) < 40 / 4  # gathered, not one predict per request
    await batcher.close()


async def test_batches_never_exceed_the_max_size() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_s=0.05)
    results = await _concurrent(batcher, [np.ones((3, 2)) for _ in range(10)])
    assert all(r.shape == (3,) for r in results)
    assert max(model.calls) <= 8 and sum(model.calls) == 30
    await batcher.close()


async def test_a_lone_request_is_predicted_alone() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=10.0)  # a wait would hang
    for i in range(3):
        batcher.enter()
        out = await asyncio.wait_for(batcher.submit("predict", np.full((1, 2), i)), 5)
        batcher.leave()
        assert out.tolist() == [2 * i]
    assert model.calls == [1, 1, 1]
    await batcher.close()


async def test_one_bad_request_does_not_fail_its_batch() -> None:
    model = Recorder(fail_on=-1.0)
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.05)
    blocks = [np.ones((1, 2)), np.full((1, 2), -1.0), np.full((1, 2), 2.0)]
    ok1, bad, ok2 = await _concurrent(batcher, blocks)
    assert ok1.tolist() == [2.0] and ok2.tolist() == [4.0]
    assert isinstance(bad, InvalidRequest) and "rejected" in bad.message
    await batcher.close()


async def test_large_batches_run_in_a_thread() -> None:
    import threading

    seen: list[str] = []

    def predict(method: str, rows: np.ndarray) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return rows[:, 0]

    batcher = MicroBatcher(predict, inline_max_rows=10)
    await batcher.submit("predict", np.zeros((5, 1)))
    await batcher.submit("predict", np.zeros((50, 1)))
    assert seen[0] == threading.current_thread().name and seen[1] != seen[0]
    await batcher.close()


async def test_wrong_row_count_from_the_model_is_an_error() -> None:
    batcher = MicroBatcher(lambda m, rows: rows[:1, 0])
    with pytest.raises(Exception, match="returned 1 rows for 2"):
        await batcher.submit("predict", np.zeros((2, 1)))
    await batcher.close()


async def _staggered(batcher: MicroBatcher, n: int, gap_s: float) -> list[np.ndarray]:
    """``n`` requests that start one after another, ``gap_s`` apart (like RPCs that grpcio's
    asyncio server starts one event-loop turn at a time): few are in flight at any moment."""

    async def one(i: int) -> np.ndarray:
        await asyncio.sleep(i * gap_s)
        batcher.enter()
        try:
            return await batcher.submit("predict", np.full((1, 2), float(i)))
        finally:
            batcher.leave()

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_the_recent_peak_lets_requests_that_start_later_join() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.05)
    await _concurrent(batcher, [np.ones((1, 2)) for _ in range(8)])  # 8 were in flight at once
    assert batcher.concurrency() == 8
    model.calls.clear()
    results = await _staggered(batcher, 8, gap_s=0.002)
    assert [r.tolist() for r in results] == [[2.0 * i] for i in range(8)]
    assert len(model.calls) < 8  # later starters joined waiting batches


async def test_without_recent_concurrency_nothing_waits() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=5.0)
    for i in range(4):  # one client, one request at a time
        batcher.enter()
        try:
            result = await asyncio.wait_for(batcher.submit("predict", np.full((1, 2), i)), 1.0)
        finally:
            batcher.leave()
        assert result.tolist() == [2 * i]
    assert model.calls == [1, 1, 1, 1]
    assert batcher.concurrency() == 1


async def test_replies_share_batches_and_a_failing_reply_does_not_stop_the_others() -> None:
    """``submit_reply``: answers come by callback, in the batcher's turn; a callback that raises
    (a write to a gone client, say) is logged, and the rest of its batch is still answered."""
    model = Recorder(fail_on=-1.0)
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_s=0.05)
    got: dict[int, object] = {}
    all_in = asyncio.get_running_loop().create_future()

    def reply(i: int):  # noqa: ANN202
        def done(result, error) -> None:  # noqa: ANN001
            if error is not None:
                got[i] = error
            else:  # listed: [array]
                got[i] = [r.tolist() for r in result] if isinstance(result, list) else result.tolist()
            if len(got) == 12 and not all_in.done():
                all_in.set_result(None)
            if i == 3:
                raise OSError("the client is gone")
        return done

    for i in range(12):
        rows = np.full((1, 2), -1.0 if i == 5 else float(i))
        batcher.submit_reply("predict", rows, reply(i), listed=i % 2 == 0)
    await asyncio.wait_for(all_in, 10)
    assert sum(model.calls) > 12 and model.calls[0] == 12  # one shared call, then the split
    for i in range(12):
        if i == 5:
            assert isinstance(got[i], InvalidRequest)
        else:
            expected = [2.0 * i]
            assert got[i] == ([expected] if i % 2 == 0 else expected)
    await batcher.close()
