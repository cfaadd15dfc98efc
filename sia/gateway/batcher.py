"""A micro-batcher: concurrent generation requests go to the backend as one batch.

One worker thread owns the backend. It waits for a first request, then gathers others for
up to ``wait_ms`` (or until ``max_batch``) and runs them in a single ``generate`` call:
on a CPU with a couple of cores one batched forward pass beats several competing ones.

A backend that also offers ``generate_continuous(requests, admit, finished)`` (``HFPolicy``
does) is driven with continuous batching instead: requests that arrive while a batch is
decoding join it between decode steps, up to ``max_batch`` in flight, and each caller is
answered as soon as its own request finishes. Callers that send their next request on an
answer (harness processes do) then keep the batch full, instead of splitting into smaller
batches that each wait for the other to finish.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, TypeVar

from sia.gateway.backend import Backend
from sia.gateway.errors import GatewayError
from sia.models.generation import Generation, GenRequest

__all__ = ["MicroBatcher"]

T = TypeVar("T")


@dataclass(frozen=True)
class _Job:
    request: GenRequest
    future: Future[Generation]


@dataclass(frozen=True)
class _Task:
    """Work other than generation (adapter switches) run between batches."""

    fn: Callable[[], Any]
    future: Future[Any]


_STOP = object()
_EXPECT_POLL_S = 0.005


class MicroBatcher:
    """Runs ``backend.generate`` on one thread over batches of concurrent requests.

    A batch starts ``wait_ms`` after its first request, or once ``max_batch`` requests are
    in. ``expected()``, when given, counts callers that are about to send (the gateway's
    episodes with no request in flight); while it is positive and the batch is not full,
    the start is put off, up to ``max_wait_ms`` after the first request. Requests that a
    batch of episodes sends as the episodes start thus begin decoding together, instead of
    as a staggered trickle whose every late-comer needs a prefill pass of its own.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch: int = 8,
        wait_ms: float = 5.0,
        expected: Callable[[], int] | None = None,
        max_wait_ms: float = 200.0,
    ) -> None:
        if max_batch < 1:
            raise GatewayError(f"max_batch must be >= 1, got {max_batch}")
        if wait_ms < 0 or max_wait_ms < wait_ms:
            raise GatewayError(
                f"batch waits must satisfy 0 <= wait_ms <= max_wait_ms, got {wait_ms}, "
                f"{max_wait_ms}"
            )
        self._backend = backend
        self._max_batch = max_batch
        self._wait = wait_ms / 1000.0
        self._max_wait = max_wait_ms / 1000.0
        self._expected = expected
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Requests per group handed to the backend: a batch, or a group joining a running one.
        self.batch_sizes: list[int] = []

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="sia-gateway-batcher")
            self._thread.daemon = True
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()

    def submit(self, request: GenRequest) -> Future[Generation]:
        future: Future[Generation] = Future()
        if self._thread is None:
            future.set_exception(GatewayError("the gateway's batcher is not running"))
            return future
        self._queue.put(_Job(request, future))
        return future

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread between batches and return its result."""
        if self._thread is None:
            return fn()
        future: Future[T] = Future()
        self._queue.put(_Task(fn, future))
        return future.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            if isinstance(first, _Task):
                _settle(first.future, first.fn)
                continue
            batch = [first]
            started = time.monotonic()
            pending: Any = None
            while len(batch) < self._max_batch:
                left = self._left(started)
                try:
                    item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    if self._left(started) > 0:
                        continue
                    break
                if not isinstance(item, _Job):
                    # A stop or a control task ends the batch; it runs right after it.
                    pending = item
                    break
                batch.append(item)
            if pending is None and callable(getattr(self._backend, "generate_continuous", None)):
                pending = self._generate_continuous(batch)
            else:
                self._generate(batch)
            if pending is _STOP:
                return
            if pending is not None:
                _settle(pending.future, pending.fn)

    def _left(self, started: float) -> float:
        """Seconds the batch begun at ``started`` may still wait for more requests."""
        elapsed = time.monotonic() - started
        if elapsed < self._wait:
            return self._wait - elapsed
        if self._expected is not None and elapsed < self._max_wait and self._expected() > 0:
            # Short slices: the count drops as soon as the last expected caller has sent.
            return min(self._max_wait - elapsed, _EXPECT_POLL_S)
        return 0.0

    def _generate(self, batch: list[_Job]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            results = self._backend.generate([job.request for job in batch])
            if len(results) != len(batch):
                raise GatewayError(
                    f"backend returned {len(results)} generations for {len(batch)} requests"
                )
        except Exception as error:
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            # One bad request (say, a prompt too long for the context) must not fail the
            # others it happened to share a batch with.
            for job in batch:
                self._generate([job])
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    def _generate_continuous(self, batch: list[_Job]) -> Any:
        """Run ``batch`` with continuous batching; return a control item that ended admission.

        Admission stops at the first stop or control task in the queue: the batch then
        drains, and the item runs after it, so no batch straddles an adapter switch.
        """
        self.batch_sizes.append(len(batch))
        arrivals = itertools.count()
        in_flight: dict[int, _Job] = {next(arrivals): job for job in batch}
        pending: Any = None

        def admit(room: int) -> Sequence[GenRequest]:
            nonlocal pending
            taken: list[_Job] = []
            room = min(room, self._max_batch - len(in_flight))
            while pending is None and len(taken) < room:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Job):
                    taken.append(item)
                else:
                    pending = item
            if taken:
                self.batch_sizes.append(len(taken))
                in_flight.update((next(arrivals), job) for job in taken)
            return [job.request for job in taken]

        def finished(index: int, result: Generation | Exception) -> None:
            future = in_flight.pop(index).future
            # A caller that went away may have cancelled its future; the batch goes on.
            with contextlib.suppress(InvalidStateError):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

        try:
            self._backend.generate_continuous(  # type: ignore[attr-defined]
                [job.request for job in batch], admit, finished
            )
        except Exception:
            # As in ``_generate``: retry the unanswered requests one by one, so a single bad
            # request fails alone.
            for job in list(in_flight.values()):
                self._generate([job])
            in_flight.clear()
        for job in in_flight.values():
            job.future.set_exception(GatewayError("the backend returned no generation"))
        return pending


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except Exception as error:
        future.set_exception(error)
