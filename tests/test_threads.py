"""Thread pools (tinyseg/threads.py): cores available, OpenBLAS through ctypes, both pools capped."""
import os
import subprocess
import sys

import numpy as np
import pytest

_USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")      # before tinyseg is imported
_USER_GOMP_SPINCOUNT = os.environ.get("GOMP_SPINCOUNT")

from tinyseg import threads  # noqa: E402


def test_available_cores_is_within_the_machine():
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)


@pytest.mark.parametrize("text, expected", [("200000 100000\n", 2.0), ("150000 100000", 1.5), ("max 100000", None)])
def test_cgroup_v2_quota(tmp_path, text, expected):
    (tmp_path / "cpu.max").write_text(text)
    assert threads._cgroup_quota(paths=(str(tmp_path / "cpu.max"),)) == expected


def test_cgroup_v1_quota_and_absent_files(tmp_path):
    (tmp_path / "quota").write_text("300000\n")
    (tmp_path / "period").write_text("100000\n")
    assert threads._cgroup_quota(paths=((str(tmp_path / "quota"), str(tmp_path / "period")),)) == 3.0
    (tmp_path / "quota").write_text("-1\n")
    assert threads._cgroup_quota(paths=((str(tmp_path / "quota"), str(tmp_path / "period")),)) is None
    assert threads._cgroup_quota(paths=(str(tmp_path / "absent"),)) is None


def test_openblas_threads_are_read_set_and_restored():
    before = threads.blas_threads()
    if before is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS this module can drive")
    assert threads.blas_core()
    with threads.blas_limit(1):
        assert threads.blas_threads() == 1
        a = np.ones((64, 64))
        np.testing.assert_allclose(a @ a, 64.0)
    assert threads.blas_threads() == before


def test_configure_caps_both_pools_and_picks_a_sleeping_threading_layer():
    import numba
    threads.configure()
    counts = threads.counts()
    assert set(counts) == {"cores", "blas", "numba"}
    assert counts["numba"] <= counts["cores"]
    if counts["blas"] is not None and "OPENBLAS_NUM_THREADS" not in os.environ:
        assert counts["blas"] <= counts["cores"]
    if "NUMBA_THREADING_LAYER" not in os.environ:
        from tinyseg.functional import conv_kernels_numba
        cols = np.empty((1, 9, 16))
        conv_kernels_numba.im2col(np.ones((1, 1, 4, 4)), 3, 3, 1, 1, 1, 1, 1, 1, 4, 0, 1, 0, 4, cols)
        assert numba.threading_layer() in ("omp", "workqueue")
        # PASSIVE only while Numba's libgomp loaded: not left for other libraries' OpenMP.
        assert os.environ.get("OMP_WAIT_POLICY") == _USER_OMP_WAIT_POLICY
        assert os.environ.get("GOMP_SPINCOUNT") == _USER_GOMP_SPINCOUNT


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs CPU affinity and 2 cores")
def test_import_caps_thread_counts_at_the_cores_the_process_may_use():
    """A process pinned to one core: NumPy's OpenBLAS and Numba get 1 thread, not os.cpu_count()."""
    code = ("import os, tinyseg, numpy, numba; from tinyseg import threads; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['NUMBA_NUM_THREADS'], threads.blas_threads(), "
            "numba.config.NUMBA_NUM_THREADS)")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    fields = out.stdout.split()
    assert fields[:2] == ["1", "1"] and fields[3] == "1"
    assert fields[2] in ("1", "None")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs CPU affinity and 2 cores")
def test_more_threads_asked_than_cores_are_lowered_to_the_cores():
    code = ("import tinyseg, numba; from tinyseg import threads; from tinyseg.functional import conv_kernels_numba; "
            "print(threads.blas_threads(), numba.get_num_threads())")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="4", NUMBA_NUM_THREADS="4")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    blas, numba_threads = out.stdout.split()
    assert numba_threads == "1" and blas in ("1", "None")


# ----- matmul on tinyseg's own threads

@pytest.mark.parametrize("a_shape, b_shape", [
    ((64, 96), (96, 4000)),            # columns split
    ((300, 96), (96, 40)),             # rows split (few columns)
    ((4, 32, 144), (4, 144, 1024)),    # batch split
    ((32, 144), (3, 144, 2000)),       # broadcast left operand, odd batch: columns split
    ((16, 24, 40), (40, 24)),          # broadcast right operand
    ((1, 64, 96), (4, 96, 512)),       # a size-1 batch broadcasts: never sliced as a batch
    ((3, 5), (5, 7)),                  # too small to split
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_equals_numpy(a_shape, b_shape, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    got = threads.matmul(a, b)
    assert got.shape == expected.shape and got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-3 if dtype == np.float32 else 1e-10)
    out = np.full(expected.shape, np.nan, dtype=dtype)
    assert threads.matmul(a, b, out=out) is out
    np.testing.assert_array_equal(out, got)                     # same parts: the same bits


def test_matmul_into_strided_views_and_transposed_operands():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((96, 64)).T                 # (64, 96), Fortran order
    b = rng.standard_normal((96, 3000))
    big = np.zeros((64, 3100))
    threads.matmul(a, b, out=big[:, 50:3050])
    np.testing.assert_allclose(big[:, 50:3050], a @ b, rtol=1e-12, atol=1e-10)
    assert not big[:, :50].any() and not big[:, 3050:].any()


def test_matmul_restores_openblas_threads_and_raises_errors():
    before = threads.blas_threads()
    with pytest.raises(ValueError):
        threads.matmul(np.ones((64, 100)), np.ones((99, 4000)))
    assert threads.blas_threads() == before


def test_matmul_from_two_threads_at_once():
    """A second caller while the pool is busy computes its product alone: both results right."""
    import concurrent.futures
    rng = np.random.default_rng(2)
    pairs = [(rng.standard_normal((128, 256)), rng.standard_normal((256, 2048))) for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda ab: threads.matmul(*ab), pairs))
    for (a, b), got in zip(pairs, results):
        np.testing.assert_allclose(got, a @ b, rtol=1e-12, atol=1e-9)


# ----- freed memory is kept for reuse (glibc)

_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
from tinyseg import threads
threads.configure()
for _ in range(3):
    a = np.ones(8 * 2**20, dtype=np.float32); del a      # 32 MB, allocated and freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    a = np.ones(8 * 2**20, dtype=np.float32); del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults_of_ten_32mb_arrays(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_arrays_reuse_freed_memory_instead_of_faulting_it_in_again():
    import ctypes
    try:
        ctypes.CDLL(None).mallopt
    except AttributeError:
        pytest.skip("the C library has no mallopt (not glibc)")
    kept = _page_faults_of_ten_32mb_arrays({})
    returned = _page_faults_of_ten_32mb_arrays({"TINYSEG_KEEP_FREED_MEMORY": "0"})
    # 10 × 32 MB is 81,920 pages of 4 KB (fewer with huge pages): returned to the system
    # and faulted in again each time without the setting, reused with it.
    assert kept < 200 < returned, (kept, returned)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_matmul_in_a_forked_child_starts_its_own_threads():
    """A child forked after the pool started inherits the pool object but not its threads: no hang."""
    a, b = np.ones((256, 512)), np.ones((512, 4096))
    threads.matmul(a, b)                       # the parent's pool exists now
    pid = os.fork()
    if pid == 0:                               # child: exit 0 only if the product is right
        ok = False
        try:
            ok = bool(np.all(threads.matmul(a, b) == 512.0))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


_IDLE_SCRIPT = """
import os, time
import numpy as np
import numba
from tinyseg.functional import elementwise_kernels_numba as compiled
x = np.ones(2**22, np.float32); y = np.empty_like(x)
compiled.relu_forward(x, y)
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(100):
    compiled.relu_forward(x, y)
    time.sleep(0.002)
print(numba.threading_layer(), os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"),
      time.process_time() - cpu, time.perf_counter() - wall)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores")
def test_numba_threads_sleep_between_parallel_loops_and_the_environment_is_left_alone():
    """Between launches (here: 2 ms sleeps) Numba's OpenMP threads sleep after a short spin (~0.1 ms): the
    process uses far less CPU time than wall time. With OMP_WAIT_POLICY=ACTIVE a worker spins through the
    sleeps (CPU ≈ wall), as it would for 300,000 spins (libgomp's default, several ms)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", _IDLE_SCRIPT], env=env, capture_output=True, text=True, check=True)
    layer, policy, spin, cpu, wall = out.stdout.split()
    if layer != "omp":
        pytest.skip(f"Numba's OpenMP layer is not available here (running {layer})")
    assert policy == spin == "None"               # GOMP_SPINCOUNT was set only while libgomp loaded
    assert float(cpu) < 0.8 * float(wall), (cpu, wall)


_FORK_SCRIPT = """
import os
import numpy as np
from tinyseg.functional import elementwise_kernels_numba as compiled
x = np.ones(2**20, np.float32); y = np.empty_like(x)
compiled.relu_forward(x, y)                 # the parent has run a parallel loop
pid = os.fork()
if pid == 0:
    compiled.relu_forward(-x, y)
    os._exit(0 if y.max() == 0 else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_numba_workqueue_layer_is_the_documented_way_to_fork_after_using_the_kernels():
    """threads.py: with NUMBA_THREADING_LAYER=workqueue a forked child may run the parallel kernels."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    out = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "0"
