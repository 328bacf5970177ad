"""Prefetching: compute the next results on a background thread while the caller works on this one.

The DataLoader uses it to read and augment the next batches while the training step
computes (``DataLoader(..., prefetch=2)``): the step spends its time in NumPy, OpenBLAS
and Numba, which release the GIL, so the loading overlaps with it.

What the thread computes is ``fn(key)`` for each key, in order: a pure function of the
key (a DataLoader batch depends only on (seed, epoch, index)), so the results are the
same whatever the timing. At most ``depth`` results wait in the queue. An exception in
``fn`` is raised to the caller when it reaches that key, as without prefetching.
``close()`` (also on leaving a ``with`` block, or when iteration ends) stops the thread
and joins it.

The thread should not launch Numba-parallel kernels: Numba's "workqueue" layer (the
fallback where OpenMP cannot load, tinyseg/threads.py) does not allow two threads to
launch parallel work at once, and the step's loops already use every core. tinyseg's
transforms are NumPy only.
"""
from __future__ import annotations

import queue
import threading

_POLL_S = 0.05          # how often a blocked thread checks whether it was asked to stop


class Prefetcher:
    """``for result in Prefetcher(fn, keys, depth): ...`` yields fn(k) for k in keys, computed ahead."""

    def __init__(self, fn, keys, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._fn, self._keys = fn, list(keys)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="tinyseg-prefetch", daemon=True)
        self._thread.start()

    def _put(self, message) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        try:
            for key in self._keys:
                if self._stop.is_set() or not self._put(("result", self._fn(key))):
                    return
        except BaseException as error:          # handed to the caller, raised where it iterates
            self._put(("error", error))
            return
        self._put(("end", None))

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "result":
            return value
        self.close()
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the thread (it finishes the result it is computing) and wait for it."""
        self._finished = True
        self._stop.set()
        while True:                      # unblock a thread waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
