"""Thread pools: NumPy's OpenBLAS and Numba's, one at a time, and never more threads than cores.

tinyseg's CPU work alternates between two thread pools: OpenBLAS's (every matrix
product) and Numba's (every compiled ``prange`` loop: im2col, the Winograd transforms,
the element-wise kernels). Neither calls the other (no kernel calls BLAS inside a
``prange``), so they never need to run nested; what hurts is a pool that keeps cores
busy while the other one works:

* OpenBLAS's idle threads spin for a while after each product: ``import tinyseg``
  sets OPENBLAS_THREAD_TIMEOUT=4 so that they go to sleep at once (tinyseg/__init__.py).
* Numba's threading layer is "workqueue": its idle workers wait on a condition
  variable (they sleep) and it needs no extra library. "omp" (GNU OpenMP) spins idle
  threads for GOMP_SPINCOUNT iterations before sleeping, i.e. against the OpenBLAS
  product that follows (measured on a 2-core Zen 3: a Winograd convolution of
  (1, 64, 256, 256) in 680 ms instead of 50 ms; on a 2-core Zen 4 at load ~15, a B16
  single-image inference, 3 alternating processes each: workqueue 1.27–1.73 s and
  0.44–0.51 CPU-seconds per step, omp with OMP_WAIT_POLICY=PASSIVE 1.83–1.96 s and
  0.68–0.92 CPU-seconds); "tbb" needs libtbb, not a dependency. A
  NUMBA_THREADING_LAYER the user set is kept.
* Both pools are capped at the cores this process may use: the CPU affinity mask and
  the cgroup CPU quota (a container granted 2 CPUs on a 64-core host sees 64 in
  ``os.cpu_count()``; OpenBLAS and Numba would each start 64 threads there). A smaller
  count the user asked for (NUMBA_NUM_THREADS, OPENBLAS_NUM_THREADS) is kept; a larger
  one is lowered to the cores (two threads per core only take turns, and a parallel
  region then waits for the thread that was switched out).
* ``blas_limit(n)`` caps OpenBLAS for a block, for code that calls BLAS from several
  threads of its own (e.g. a data-loading thread next to the training step).

OpenBLAS is driven through ctypes, threadpoolctl's way: find the OpenBLAS library that
NumPy loaded (/proc/self/maps) and call its ``*openblas_set_num_threads*`` symbols —
NumPy 2.x wheels ship it as scipy-openblas with suffixed names
(``scipy_openblas_set_num_threads64_``).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os

# Symbol names, by OpenBLAS build: NumPy 2.x wheels (scipy-openblas, 64-bit ints), then plain builds.
_SET_SYMBOLS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
                "openblas_set_num_threads")
_GET_SYMBOLS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
                "openblas_get_num_threads")
_CORE_SYMBOLS = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
                 "openblas_get_corename")


@functools.lru_cache(maxsize=1)
def available_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by the cgroup CPU quota (read once)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota(paths=("/sys/fs/cgroup/cpu.max",
                         ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"))):
    """The cgroup's CPU quota in CPUs (cgroup v2 cpu.max or v1 cfs files), or None when unlimited."""
    for path in paths:
        try:
            if isinstance(path, tuple):
                with open(path[0]) as f:
                    quota = int(f.read().strip())
                with open(path[1]) as f:
                    period = int(f.read().strip())
            else:
                with open(path) as f:
                    fields = f.read().split()
                if fields[0] == "max":
                    return None
                quota, period = int(fields[0]), int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


# ----------------------------------------------------------------------------- OpenBLAS

class _OpenBlas:
    """The OpenBLAS NumPy loaded, through ctypes (None fields when it cannot be found)."""

    def __init__(self):
        self.path = self.set_threads = self.get_threads = self.corename = None
        import numpy  # noqa: F401  (loads the library)
        for path in _loaded_libraries():
            if "openblas" not in os.path.basename(path).lower():
                continue
            try:
                library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL)
            except OSError:
                continue
            setter = _symbol(library, _SET_SYMBOLS)
            getter = _symbol(library, _GET_SYMBOLS)
            if setter is None or getter is None:
                continue
            setter.argtypes, setter.restype = [ctypes.c_int], None
            getter.argtypes, getter.restype = [], ctypes.c_int
            self.path, self.set_threads, self.get_threads = path, setter, getter
            corename = _symbol(library, _CORE_SYMBOLS)
            if corename is not None:
                corename.argtypes, corename.restype = [], ctypes.c_char_p
                self.corename = corename
            return


def _symbol(library, names):
    for name in names:
        try:
            return getattr(library, name)
        except AttributeError:
            continue
    return None


def _loaded_libraries() -> list[str]:
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return []
    return sorted(paths)


_blas: _OpenBlas | None = None


def _openblas() -> _OpenBlas:
    global _blas
    if _blas is None:
        _blas = _OpenBlas()
    return _blas


def blas_threads() -> int | None:
    """OpenBLAS's thread count, or None when NumPy's BLAS is not an OpenBLAS found here."""
    blas = _openblas()
    return None if blas.get_threads is None else int(blas.get_threads())


def set_blas_threads(n: int) -> bool:
    """Set OpenBLAS's thread count; False when it cannot be controlled here."""
    blas = _openblas()
    if blas.set_threads is None:
        return False
    blas.set_threads(max(1, int(n)))
    return True


@contextlib.contextmanager
def blas_limit(n: int):
    """``with blas_limit(1): ...`` runs the block with at most ``n`` OpenBLAS threads."""
    previous = blas_threads()
    if previous is None or previous <= n:
        yield
        return
    set_blas_threads(n)
    try:
        yield
    finally:
        set_blas_threads(previous)


def blas_core() -> str | None:
    """The CPU kernel family OpenBLAS chose at load time (e.g. 'SkylakeX', 'Zen', 'Haswell')."""
    blas = _openblas()
    if blas.corename is None:
        return None
    name = blas.corename()
    return name.decode() if name else None


# ----------------------------------------------------------------------------- both pools

_configured = False


def configure() -> None:
    """Cap OpenBLAS and Numba at the cores available (or the smaller counts the user set); once per process.

    Called by the compiled kernels on import, before their first parallel launch.
    """
    global _configured
    if not _configured:
        _configured = True
        cores = available_cores()
        blas = blas_threads()
        if blas is not None and blas > cores:      # more threads than cores, asked or not: oversubscription
            set_blas_threads(cores)
        import numba
        if "NUMBA_THREADING_LAYER" not in os.environ:
            numba.config.THREADING_LAYER = "workqueue"
        # Numba launches NUMBA_NUM_THREADS workers (``import tinyseg`` caps that variable when
        # it is unset); set_num_threads lowers the count a launch uses, from this thread.
        wanted = min(cores, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() > wanted:
            numba.set_num_threads(wanted)


def counts() -> dict:
    """{"cores": available, "blas": OpenBLAS threads, "numba": Numba threads (None before Numba loads)}."""
    import sys
    numba = sys.modules.get("numba")
    return {"cores": available_cores(), "blas": blas_threads(),
            "numba": numba.get_num_threads() if numba is not None else None}
