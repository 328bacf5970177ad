"""Thread pools: NumPy's OpenBLAS and Numba's, one at a time, and never more threads than cores.

tinyseg's CPU work alternates between two thread pools: OpenBLAS's (every matrix
product) and Numba's (every compiled ``prange`` loop: im2col, the Winograd transforms,
the element-wise kernels). Neither calls the other (no kernel calls BLAS inside a
``prange``), so they never need to run nested; what hurts is a pool that keeps cores
busy while the other one works:

* tinyseg's matrix products do not use OpenBLAS's pool at all: ``matmul`` (below) runs
  OpenBLAS single-threaded and splits each product over tinyseg's own worker threads,
  which sleep on a queue between products. OpenBLAS's idle workers spin for ~0.1 s after
  every multi-threaded product (2^28 cycles), so a spinning OpenBLAS thread took a core
  from the Numba loop that followed: measured on a 2-core Zen 4, a B16 training step
  took 448 ms with NumPy imported before tinyseg (too late for the
  OPENBLAS_THREAD_TIMEOUT=4 that ``import tinyseg`` sets) and 351 ms after; with the
  products on tinyseg's threads, 363 and 351 ms, and the OpenBLAS worker uses no CPU.
* Numba's threading layer is "omp" (GNU OpenMP) with short spins (GOMP_SPINCOUNT=
  OMP_SPIN_COUNT in the environment only while Numba's libgomp loads, unless the user
  set it or OMP_WAIT_POLICY: another library's OpenMP in the same process, PyTorch's
  for one, loads later with its own default): the calling thread works as one of the
  team (no hand-off to a worker and back), idle threads spin ~0.1 ms (back-to-back
  loops find them awake) and then sleep, and launches from several Python threads are
  allowed. (Until 2026-12-04 afternoon: OMP_WAIT_POLICY=PASSIVE, sleeping at once; the
  short spin took 1.5–2 ms off a 20 ms B16 inference, below.) "workqueue" (whose idle workers also sleep)
  is the fallback where libgomp cannot load. Measured on the 2-core Zen 4, B16 training
  step, alternating processes: workqueue 364–382 ms, omp passive 311–343 ms; the
  Winograd input transform kept 1.44 cores busy under workqueue and 1.79 under omp.
  With OpenMP's default wait policy (threads spin 300,000 rounds before sleeping) the
  same step took 472 ms: the spinning team takes the cores from the GEMM threads. A
  NUMBA_THREADING_LAYER the user set is kept.
  The price: GNU OpenMP is not fork-safe. Once tinyseg's compiled CPU kernels have
  loaded (the first CPU op that uses them), a child made by a bare ``os.fork()`` — e.g.
  ``multiprocessing`` with the "fork" start method, Python's default on Linux before
  3.14 — is terminated by Numba ("fork() called from a process already using GNU
  OpenMP") if it runs one of them. Use the "spawn" or "forkserver" start method, or
  NUMBA_THREADING_LAYER=workqueue (fork-safe, ~10 % slower here). PyTorch's OpenMP has
  the same rule. tinyseg itself never forks (its DataLoader prefetches on a thread).
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
        keep_freed_memory()
        import numba
        select_threading_layer()
        # Numba launches NUMBA_NUM_THREADS workers (``import tinyseg`` caps that variable when
        # it is unset); set_num_threads lowers the count a launch uses, from this thread.
        wanted = min(cores, numba.config.NUMBA_NUM_THREADS)
        if numba.get_num_threads() > wanted:
            numba.set_num_threads(wanted)


_numba_threads_started = False


def select_threading_layer() -> None:
    """Numba's threading layer: "omp" with short spins, else "workqueue"; started now, once.

    Each compiled-kernel module calls it on import, before Numba's first parallel launch.
    A NUMBA_THREADING_LAYER set by the user is kept. libgomp reads OMP_WAIT_POLICY and
    GOMP_SPINCOUNT when it loads, which is when Numba starts its threads: so the threads
    are started here, with GOMP_SPINCOUNT=OMP_SPIN_COUNT for that moment only (unless the
    user set either variable: theirs are kept), and the environment is restored right
    after — PyTorch, or any other library whose OpenMP loads later in the same process,
    keeps its own default.
    """
    global _numba_threads_started
    if _numba_threads_started:
        return
    _numba_threads_started = True
    import numba
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "default"
        numba.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]
    set_here = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    if set_here:
        os.environ["GOMP_SPINCOUNT"] = str(OMP_SPIN_COUNT)
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()        # loads the layer (and libgomp) now
    finally:
        if set_here:
            os.environ.pop("GOMP_SPINCOUNT", None)


# How long Numba's OpenMP threads spin after a parallel loop before they sleep, in libgomp's
# spin iterations (GOMP_SPINCOUNT; one iteration is a pause instruction, ~20–65 cycles:
# ~0.03–0.1 ms in all). A layer sequence launches loops back to back (conv, pool, ...), and
# a sleeping thread costs a futex wake-up per loop; a thread spinning for long competes
# with tinyseg's GEMM threads for the cores (libgomp's default, 300,000: the B16 step
# 472 ms against 311–343). Measured on a 2-core Zen 4, one 128² B16 inference (medians of
# 40, four alternations): sleeping at once (OMP_WAIT_POLICY=PASSIVE) 20.4–28.4 ms, 5,000
# iterations 19.9–21.9 ms (the fastest steps 18.1–21.6 → 16.5–18.5 ms).
OMP_SPIN_COUNT = 5000


# ----------------------------------------------------------------------------- freed memory stays for reuse

# glibc's malloc serves blocks above M_MMAP_THRESHOLD (dynamic, at most 32 MB) with fresh
# mmap()s and returns them to the system when freed, and trims the heap's free top beyond
# M_TRIM_THRESHOLD. A network's activations are allocated and freed at the same sizes
# every step, so each step faulted its memory in again, page by page, zero-filled by
# the kernel: measured on a 2-core Zen 4, the B64 U-Net's single-image inference took
# 10,770 page faults and 84 ms of system time per 769 ms step; with both thresholds at
# 1 GiB, 3 faults and 5–14 ms, and the step 695–739 ms. (PyTorch keeps a caching
# allocator on the GPU for the same reason.) Peak memory is unchanged: the freed blocks
# are reused, not added to.
_MALLOC_LIMIT = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_configured = False


def keep_freed_memory() -> bool:
    """Make glibc keep freed blocks (< 1 GiB) for reuse instead of returning them to the system; once.

    Skipped when the user set MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (glibc
    reads those itself), when TINYSEG_KEEP_FREED_MEMORY=0, and where the C library has no
    ``mallopt`` (not glibc). Returns whether the thresholds were set.
    """
    global _malloc_configured
    if _malloc_configured:
        return False
    _malloc_configured = True
    if os.environ.get("TINYSEG_KEEP_FREED_MEMORY", "1") == "0" or any(
            name in os.environ for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MALLOC_LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _MALLOC_LIMIT))


def counts() -> dict:
    """{"cores": available, "blas": OpenBLAS threads, "numba": Numba threads (None before Numba loads)}."""
    import sys
    numba = sys.modules.get("numba")
    return {"cores": available_cores(), "blas": blas_threads(),
            "numba": numba.get_num_threads() if numba is not None else None}


# ----------------------------------------------------------------------------- GEMMs on tinyseg's own threads

# Below this many multiply-adds a product runs on the calling thread alone: waking a
# worker (~20–50 µs) would cost more than the half of the work it takes over.
PARALLEL_GEMM_MIN_MACS = 2**21


class _GemmPool:
    """``cores − 1`` worker threads that each run one part of a matrix product, then sleep.

    The calling thread computes the first part itself. Workers wait on a queue (they
    sleep, they do not spin), so between products the cores belong to whoever runs next
    (Numba's loops). One product at a time: a second thread that calls in meanwhile
    (e.g. a data-loading thread) computes its product alone.
    """

    def __init__(self, workers: int):
        import queue
        import threading
        self.pid = os.getpid()            # a forked child has the object but not the threads
        self.lock = threading.Lock()
        self.inboxes = [queue.SimpleQueue() for _ in range(workers)]
        self.done = queue.SimpleQueue()
        for inbox in self.inboxes:
            threading.Thread(target=self._work, args=(inbox,), name="tinyseg-gemm", daemon=True).start()

    def _work(self, inbox):
        while True:
            task = inbox.get()
            try:
                task()
                self.done.put(None)
            except BaseException as error:       # re-raised in the caller
                self.done.put(error)

    def run(self, tasks) -> None:
        """Run tasks[0] here and the others on the workers; return when all are done."""
        for inbox, task in zip(self.inboxes, tasks[1:]):
            inbox.put(task)
        first_error = None
        try:
            tasks[0]()
        except BaseException as error:
            first_error = error
        for _ in tasks[1:]:
            error = self.done.get()
            first_error = first_error or error
        if first_error is not None:
            raise first_error


_pool: _GemmPool | None = None


def gemm_threads() -> int:
    """Threads ``matmul`` splits a product over: the Numba thread count (the same cores), at least 1."""
    import sys
    numba = sys.modules.get("numba")
    return max(1, numba.get_num_threads() if numba is not None else available_cores())


def matmul(a, b, out=None):
    """``np.matmul(a, b, out=out)`` for NumPy arrays of 2 or 3 dimensions, split over tinyseg's own threads.

    OpenBLAS runs single-threaded for the call (``blas_limit(1)``) and the product is cut
    into ``gemm_threads()`` parts — along the batch axis when it divides evenly, else
    along the output's columns or rows — each one GEMM on its own thread. This keeps one
    thread pool at a time on the cores: OpenBLAS's own workers, which spin after each
    product (for 0.1 s unless OPENBLAS_THREAD_TIMEOUT was set before NumPy loaded), are
    never woken. The parts depend only on the shapes and the thread count, so the result
    is the same from run to run. Small products (< PARALLEL_GEMM_MIN_MACS multiply-adds)
    run on the calling thread.
    """
    import numpy as np
    global _pool
    if out is None:
        shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        out = np.empty(shape, dtype=np.result_type(a, b))
    M, K, N = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = out.shape[0] if out.ndim == 3 else 1
    parts = gemm_threads()
    if parts == 1 or out.ndim > 3 or batch * M * N * K < PARALLEL_GEMM_MIN_MACS:
        with blas_limit(1):
            return np.matmul(a, b, out=out)
    if _pool is None or len(_pool.inboxes) != parts - 1 or _pool.pid != os.getpid():
        _pool = _GemmPool(parts - 1)
    if not _pool.lock.acquire(blocking=False):      # another thread's product is running: compute alone
        with blas_limit(1):
            return np.matmul(a, b, out=out)
    try:
        tasks = _split(np, a, b, out, batch, M, N, parts)
        with blas_limit(1):
            _pool.run(tasks)
    finally:
        _pool.lock.release()
    return out


def _split(np, a, b, out, batch, M, N, parts):
    """``parts`` closures that each compute one slab of out = a @ b."""
    def ranges(length, align=1):
        step = -(-length // parts)
        step = -(-step // align) * align
        return [(lo, min(length, lo + step)) for lo in range(0, length, step)]

    def product(a_part, b_part, out_part):
        return lambda: np.matmul(a_part, b_part, out=out_part)

    if out.ndim == 3 and batch % parts == 0 and all(o.ndim == 2 or o.shape[0] == batch for o in (a, b)):
        def side(operand, lo, hi):
            return operand[lo:hi] if operand.ndim == 3 else operand
        return [product(side(a, lo, hi), side(b, lo, hi), out[lo:hi]) for lo, hi in ranges(batch)]
    if N >= 64 * parts or N >= M:
        return [product(a, b[..., lo:hi], out[..., lo:hi]) for lo, hi in ranges(N, align=16)]
    return [product(a[..., lo:hi, :], b, out[..., lo:hi, :]) for lo, hi in ranges(M)]
