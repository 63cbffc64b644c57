"""Synthesis for the server: bounded, off the event loop, and fair chunk by chunk.

Three limits, so that load can never pile up without bound:

- ``workers``: chunks of audio computed at the same time (one per CPU core by default, each
  on its share of the cores' threads);
- ``streams``: requests being synthesised at the same time, interleaved chunk by chunk;
- ``queue``: requests that may wait for a stream; one more is refused at once (503).

Each stream turns a request's :meth:`Synthesizer.stream` in its own thread, but computes
a chunk only when :class:`ChunkScheduler` gives it a worker. The scheduler picks the chunk
whose audio is due first (earliest deadline first): a request's deadline for a chunk is the
moment it arrived plus the seconds of audio already sent, so a new request's first chunk
goes before the later chunks of requests that are ahead of their listeners, and a request
falling behind its listener goes before them all. That keeps the time to the first audio
short under load without slowing anyone's playback. Chunks reach the response through an
asyncio queue; when the client goes away or the request's time runs out, the stream stops
at its next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flowspeech.inference.synthesizer import AudioChunk, Synthesizer

_DONE = object()


class Busy(Exception):
    """Every stream and queue place is taken."""


class Expired(Exception):
    """The request ran past its time limit."""


class ChunkScheduler:
    """At most ``workers`` chunks are computed at once; the waiting chunk with the earliest
    deadline goes next (ties: first come)."""

    def __init__(self, workers: int):
        self.workers = workers
        self._free = workers
        self._waiting: list[tuple[float, int]] = []
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def turn(self, deadline: float) -> Iterator[None]:
        """Hold a worker for one chunk's computation; ``deadline`` in ``time.monotonic()``
        seconds."""
        with self._changed:
            key = (deadline, next(self._tickets))
            heapq.heappush(self._waiting, key)
            while not (self._free and self._waiting[0] == key):
                self._changed.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            if self._free and self._waiting:
                self._changed.notify_all()  # the next in line may take the other free worker
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify_all()

    @property
    def busy(self) -> int:
        return self.workers - self._free


@dataclass
class Job:
    """One request's synthesis: when it arrived and the flag that stops its stream."""

    arrived: float
    cancel: threading.Event

    def close(self) -> None:
        self.cancel.set()


class SpeechEngine:
    """``workers`` chunks computed at once for up to ``streams`` requests; ``queue`` more
    requests may wait."""

    def __init__(self, workers: int, streams: int, queue: int):
        self.workers, self.streams, self.queue = workers, streams, queue
        self.scheduler = ChunkScheduler(workers)
        self._pool = ThreadPoolExecutor(max_workers=streams, thread_name_prefix="flowspeech-stream")
        self._lock = threading.Lock()
        self.pending = 0   # requests holding a place (streaming or waiting)
        self.running = 0   # requests streaming

    @property
    def waiting(self) -> int:
        return max(0, self.pending - self.running)

    def admit(self) -> None:
        """Take a place, or raise :class:`Busy`."""
        with self._lock:
            if self.pending >= self.streams + self.queue:
                raise Busy()
            self.pending += 1

    def release(self) -> None:
        with self._lock:
            self.pending -= 1

    async def stream(self, tts: Synthesizer, text: str, options: dict, job: Job,
                     deadline: float) -> AsyncIterator[AudioChunk]:
        """The chunks of ``tts.stream(text, **options)``; raises :class:`Expired` past
        ``deadline`` (``time.monotonic()``) and the synthesis's own errors (a text that cannot
        be spoken) as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            with self._lock:
                self.running += 1
            try:
                chunks, sent = tts.stream(text, **options), 0.0
                while not job.cancel.is_set():
                    if time.monotonic() > deadline:
                        put(Expired())
                        return
                    with self.scheduler.turn(job.arrived + sent):
                        chunk = next(chunks, None)
                    if chunk is None:
                        break
                    sent = chunk.end
                    put(chunk)
                put(_DONE)
            except BaseException as err:  # handed to the request, which reports it
                put(err)
            finally:
                with self._lock:
                    self.running -= 1

        self._pool.submit(work)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Expired()
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=remaining)
                except TimeoutError:
                    raise Expired() from None
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.close()  # a client that went away, an error, or the end: the stream stops

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
