"""Micro-batching: concurrent requests to one model share a forward pass.

Requests wait in an asyncio queue. One task per model takes the first waiting request, gathers
more for at most ``max_wait_ms`` (or until ``max_batch_size`` molecules are gathered), runs the
model once on all of them in the service's model thread (so the event loop keeps answering), and
hands every request its own rows back. Up to two calls are in the executor at a time (one
running, one waiting), and requests that arrive meanwhile are gathered into the call after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from molml.errors import DataError
from molml.options import check_int


@dataclass
class Scores:
    """Predictions for a list of molecules: ``values [n, columns]`` (NaN where the molecule
    failed), the status of each molecule and, with a reference set, its maximum Tanimoto
    similarity to it (NaN for failed molecules)."""

    values: np.ndarray
    status: list[str]
    similarity: np.ndarray | None = None

    def __getitem__(self, rows: slice) -> Scores:
        similarity = None if self.similarity is None else self.similarity[rows]
        return Scores(self.values[rows], self.status[rows], similarity)


class Overloaded(Exception):
    """More molecules are waiting for a model than the service accepts (answer 503)."""


@dataclass
class _Pending:
    smiles: list[str]
    future: asyncio.Future[Scores]


class MicroBatcher:
    """Gathers the molecules of concurrent requests into one call of ``score``.

    Args:
        score: scores a list of SMILES (runs in ``executor``, never on the event loop).
        executor: where ``score`` runs; one worker thread keeps model calls in sequence.
        max_batch_size: most molecules gathered into one call (a larger request is one call
            on its own; 0 turns gathering off: one call per request).
        max_wait_ms: how long the first request of a batch waits for others.
        on_batch: called with the number of molecules of each call (for metrics).
        max_pending: most molecules admitted and not yet answered (waiting or being scored);
            a request that would go beyond it raises :class:`Overloaded` at once, unless
            nothing is pending (a request is never refused by an idle model). 0: no limit.
    """

    def __init__(
        self,
        score: Callable[[list[str]], Scores],
        executor: Executor,
        *,
        max_batch_size: int = 256,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int], Any] | None = None,
        max_pending: int = 0,
    ) -> None:
        check_int(max_batch_size, "max_batch_size", minimum=0)
        check_int(max_pending, "max_pending", minimum=0)
        if not max_wait_ms >= 0:
            raise DataError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        self.score = score
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.on_batch = on_batch
        self.max_pending = max_pending
        self.pending = 0  # molecules admitted and not yet answered
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry: _Pending | None = None
        self._slots: asyncio.Semaphore | None = None  # batches running or queued in executor

    async def start(self) -> None:
        """Start gathering on the running event loop."""
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(2)
        self._task = asyncio.create_task(self._gather_forever())

    async def stop(self) -> None:
        """Stop gathering; requests still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting = [self._carry] if self._carry is not None else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for pending in waiting:
            pending.future.cancel()
        self._task = self._queue = self._carry = None

    async def predict(self, smiles: list[str]) -> Scores:
        """Scores for ``smiles``, computed together with other waiting requests; raises
        :class:`Overloaded` when they would take the molecules waiting beyond ``max_pending``."""
        if self.max_pending and self.pending and self.pending + len(smiles) > self.max_pending:
            raise Overloaded(
                f"{self.pending} molecules are waiting for this model and {len(smiles)} more "
                f"would go beyond its limit of {self.max_pending}"
            )
        self.pending += len(smiles)
        try:
            return await self._predict(smiles)
        finally:
            self.pending -= len(smiles)

    async def _predict(self, smiles: list[str]) -> Scores:
        loop = asyncio.get_running_loop()
        if self.max_batch_size == 0:
            return await loop.run_in_executor(self.executor, self._call, smiles)
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future: asyncio.Future[Scores] = loop.create_future()
        await self._queue.put(_Pending(smiles, future))
        return await future

    def _call(self, smiles: list[str]) -> Scores:
        if self.on_batch is not None:
            self.on_batch(len(smiles))
        return self.score(smiles)

    async def _next_batch(self) -> list[_Pending]:
        """The oldest waiting request and those that join it within ``max_wait`` (in order)."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.smiles)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            if self._queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                nxt = self._queue.get_nowait()
            if size + len(nxt.smiles) > self.max_batch_size:
                self._carry = nxt  # first in the next batch
                break
            batch.append(nxt)
            size += len(nxt.smiles)
        return batch

    async def _gather_forever(self) -> None:
        """Gather batches and hand them to the executor. One batch may wait in the executor
        while another runs, so the model never idles for the event loop, and requests that
        arrive meanwhile are gathered into the batch after."""
        slots = self._slots
        assert slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await slots.acquire()
            batch = [p for p in await self._next_batch() if not p.future.done()]
            if not batch:  # every client of the batch has gone
                slots.release()
                continue
            smiles = [s for p in batch for s in p.smiles]
            call = loop.run_in_executor(self.executor, self._call, smiles)
            call.add_done_callback(partial(_deliver, slots, batch))


def _deliver(slots: asyncio.Semaphore, batch: list[_Pending], call: asyncio.Future[Scores]) -> None:
    """Give each request of a finished model call its rows (or the call's error)."""
    slots.release()
    if call.cancelled():
        for p in batch:
            p.future.cancel()
        return
    error = call.exception()
    if error is not None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)
        return
    scores, start = call.result(), 0
    for p in batch:
        stop = start + len(p.smiles)
        if not p.future.done():
            p.future.set_result(scores[start:stop])
        start = stop
