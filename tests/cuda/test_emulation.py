"""The host emulation of the CUDA execution model, on small kernels written for the purpose.

Shared-memory tiles with __syncthreads, warp shuffles, dynamic shared memory, atomics,
the deadlock of a divergent barrier, argument checks, launch records and guard bands.
"""
import shutil

import numpy as np
import pytest

import tinyseg as ts
from tinyseg import cuda
from tinyseg.cuda.emulation import EmulatedModule, EmulationError, rewrite_for_host

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++")

SOURCE = r"""
#define TILE 8
template <typename T>
__global__ void matmul_tiled(const T* A, const T* B, T* C, int n) {
    __shared__ T As[TILE][TILE];
    __shared__ T Bs[TILE][TILE];
    int row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    T acc = 0;
    for (int t = 0; t < (n + TILE - 1) / TILE; ++t) {
        As[threadIdx.y][threadIdx.x] = (row < n && t * TILE + (int)threadIdx.x < n) ? A[row * n + t * TILE + threadIdx.x] : T(0);
        Bs[threadIdx.y][threadIdx.x] = (col < n && t * TILE + (int)threadIdx.y < n) ? B[(t * TILE + threadIdx.y) * n + col] : T(0);
        __syncthreads();
        for (int k = 0; k < TILE; ++k) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
        __syncthreads();
    }
    if (row < n && col < n) C[row * n + col] = acc;
}

template <typename T>
__global__ void block_sum(const T* x, T* out, long long n) {
    extern __shared__ __align__(16) unsigned char raw[];
    T* partial = reinterpret_cast<T*>(raw);
    T v = 0;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n; k += (long long)gridDim.x * blockDim.x)
        v += x[k];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        T s = 0;
        for (int w = 0; w < (int)blockDim.x / 32; ++w) s += partial[w];
        atomicAdd(out, s);
    }
}

template <typename T>
__global__ void divergent_barrier(T* x) {
    if (threadIdx.x < 16) __syncthreads(); else __syncwarp();
}

template <typename T>
__global__ void early_exit_then_barrier(T* x, T* y, int n) {
    if ((int)threadIdx.x >= n) return;
    x[threadIdx.x] = T(1 + threadIdx.x);
    __syncthreads();
    y[threadIdx.x] = x[threadIdx.x] + x[(threadIdx.x + 1) % n];
}

template <typename T>
__global__ void write_one_past(T* x, long long n) {
    long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (k <= n) x[k] = T(1);                 // the classic off-by-one: k == n is out of bounds
}

template <typename T>
__global__ void thread_ids(int* out) {
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}
"""
NAMES = ["matmul_tiled<float>", "matmul_tiled<double>", "block_sum<double>", "divergent_barrier<float>",
         "early_exit_then_barrier<float>", "write_one_past<float>", "thread_ids<float>"]


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    path = tmp_path_factory.mktemp("emulation") / "test_kernels.cu"
    path.write_text(SOURCE)
    return EmulatedModule(path, NAMES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 8, 13, 37])
def test_tiled_matmul_with_shared_memory_and_barriers(module, dtype, n):
    rng = np.random.default_rng(n)
    A, B = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
    C = np.full((n, n), np.nan, dtype)
    blocks = -(-n // 8)
    ctype = "float" if dtype == np.float32 else "double"
    module.get_function(f"matmul_tiled<{ctype}>")((blocks, blocks), (8, 8), (A, B, C, np.int32(n)))
    np.testing.assert_allclose(C, A @ B, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("threads", [32, 64, 256])
def test_warp_shuffle_reduction_dynamic_shared_memory_and_atomics(module, threads):
    x = np.random.default_rng(0).random(10_001)
    out = np.zeros(1)
    module.get_function("block_sum<double>")(5, threads, (x, out, np.int64(x.size)), shared_mem=8 * threads // 32)
    np.testing.assert_allclose(out[0], x.sum(), rtol=1e-12)


def test_threads_and_blocks_are_numbered_as_cuda_numbers_them(module):
    grid, block = (3, 2, 2), (4, 2, 3)
    count = np.prod(grid) * np.prod(block)
    out = np.full(count, -1, np.int32)
    module.get_function("thread_ids<float>")(grid, block, (out,))
    per_block = np.prod(block)
    expected = [b * 1000 + t for b in range(np.prod(grid)) for t in range(per_block)]
    np.testing.assert_array_equal(out, expected)


def test_divergent_barrier_is_reported_as_a_deadlock(module):
    with pytest.raises(EmulationError, match="deadlock in block"):
        module.get_function("divergent_barrier<float>")(1, 64, (np.zeros(64, np.float32),))


def test_threads_that_exited_do_not_hold_a_barrier(module):
    x, y = np.zeros(8, np.float32), np.zeros(8, np.float32)
    module.get_function("early_exit_then_barrier<float>")(1, 32, (x, y, np.int32(5)))
    # every live thread wrote its x before any read it: y = x[t] + x[t+1 mod 5]
    np.testing.assert_array_equal(y, [3, 5, 7, 9, 6, 0, 0, 0])


def test_arguments_are_checked_against_the_kernel_signature(module):
    kernel = module.get_function("matmul_tiled<float>")
    A = np.zeros((2, 2), np.float32)
    with pytest.raises(TypeError, match="argument 3 is a 4-byte integer value, got int64"):
        kernel(1, (8, 8), (A, A, A, np.int64(2)))
    with pytest.raises(TypeError, match="argument 0 points to 4-byte elements, got a float64 array"):
        kernel(1, (8, 8), (A.astype(np.float64), A, A, np.int32(2)))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        kernel(1, (8, 8), (A, A, A))
    with pytest.raises(TypeError, match="exact types"):
        kernel(1, (8, 8), (A, A, A, 2))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel(1, (8, 8), (A.T, A, A, np.int32(2)))
    with pytest.raises(EmulationError, match="CUDA allows 1 to 1024"):
        kernel(1, (64, 32), (A, A, A, np.int32(2)))
    with pytest.raises(KeyError, match="has no kernel"):
        module.get_function("no_such_kernel<float>")


def test_dynamic_shared_memory_declaration_is_rewritten_for_the_host():
    text = "extern __shared__ __align__(16) unsigned char raw[];"
    assert rewrite_for_host(text) == \
        "unsigned char* raw = reinterpret_cast<unsigned char*>(ts_emu::dynamic_shared_memory());"


def test_launches_are_recorded_and_need_the_emulation_for_numpy_arrays():
    x = np.array([-1.0, 2.0], np.float32)
    y = np.empty_like(x)
    with pytest.raises(RuntimeError, match="cuda_emulation"):
        cuda.launch("activation.cu", "relu_forward", x.dtype, 1, 32, (x, y, np.int64(2)))
    with ts.backend.cuda_emulation() as outer:
        with ts.backend.cuda_emulation() as inner:
            cuda.launch("activation.cu", "relu_forward", x.dtype, 1, 32, (x, y, np.int64(2)))
        cuda.launch("activation.cu", "relu_backward", x.dtype, (2,), (64,), (x, y, y, np.int64(2)))
    np.testing.assert_array_equal(y, [0.0, 2.0])
    assert inner.kernels() == ["relu_forward<float>"]
    assert outer.kernels() == ["relu_forward<float>", "relu_backward<float>"]
    record = outer.launches[1]
    assert (record.grid, record.block, record.shared_mem, record.threads) == ((2, 1, 1), (64, 1, 1), 0, 128)
    assert "relu_backward<float> <<<grid (2, 1, 1), block (64, 1, 1), 0 B shared>>>" in str(record)


def test_guard_bands_catch_a_write_out_of_bounds(tmp_path, monkeypatch):
    # The off-by-one kernel, launched through the shared launch path from a kernels dir of its own.
    (tmp_path / "bad.cu").write_text(SOURCE)
    monkeypatch.setattr(cuda, "kernels_dir", lambda: tmp_path)
    x = np.zeros(100, np.float32)
    with ts.backend.cuda_emulation(guard_band=True):
        with pytest.raises(cuda.GuardBandError, match="wrote 4 bytes after its array argument #0"):
            cuda.launch("bad.cu", "write_one_past", x.dtype, 1, 128, (x, np.int64(100)))
    y = np.zeros(101, np.float32)
    with ts.backend.cuda_emulation(guard_band=True):          # in bounds: no complaint, values back
        cuda.launch("bad.cu", "write_one_past", y.dtype, 1, 128, (y[:100].copy(), np.int64(99)))
        z = np.zeros(100, np.float32)
        cuda.launch("bad.cu", "write_one_past", z.dtype, 1, 128, (z, np.int64(99)))
    np.testing.assert_array_equal(z, 1.0)


INDEXED_SOURCE = r"""
// Per row of x (rows × cols): its maximum and the column of its first maximum, as an Index.
template <typename T, typename Index>
__global__ void row_argmax(const T* x, T* best, Index* column, long long rows, long long cols) {
    long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (r >= rows) return;
    long long c_best = 0;
    for (long long c = 1; c < cols; ++c) if (x[r * cols + c] > x[r * cols + c_best]) c_best = c;
    best[r] = x[r * cols + c_best];
    column[r] = (Index)c_best;
}
"""


@pytest.mark.parametrize("index_dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_kernel_templated_on_an_index_type_runs_as_kernel_T_Index(tmp_path, monkeypatch, dtype, index_dtype):
    (tmp_path / "indexed.cu").write_text(INDEXED_SOURCE)
    monkeypatch.setattr(cuda, "kernels_dir", lambda: tmp_path)
    x = np.random.default_rng(0).standard_normal((5, 300)).astype(dtype)
    best, column = np.empty(5, dtype), np.empty(5, index_dtype)
    with ts.backend.cuda_emulation(guard_band=True) as emu:
        cuda.launch("indexed.cu", "row_argmax", dtype, 1, 32, (x, best, column, np.int64(5), np.int64(300)),
                    index_dtype=index_dtype)
    np.testing.assert_array_equal(best, x.max(axis=1))
    np.testing.assert_array_equal(column, x.argmax(axis=1).astype(index_dtype))    # uint8 wraps 300 columns
    ctype = {np.float32: "float", np.float64: "double"}[dtype]
    itype = {np.uint8: "unsigned char", np.uint16: "unsigned short", np.uint32: "unsigned int"}[index_dtype]
    assert emu.kernels() == [f"row_argmax<{ctype}, {itype}>"]


def test_a_kernel_templated_on_an_index_type_needs_the_right_index(tmp_path, monkeypatch):
    (tmp_path / "indexed.cu").write_text(INDEXED_SOURCE)
    monkeypatch.setattr(cuda, "kernels_dir", lambda: tmp_path)
    x, best = np.zeros((2, 3), np.float32), np.zeros(2, np.float32)
    args = (x, best, np.zeros(2, np.uint16), np.int64(2), np.int64(3))
    with ts.backend.cuda_emulation():
        with pytest.raises(KeyError, match=r"row_argmax<float, unsigned char>.*pass index_dtype="):
            cuda.launch("indexed.cu", "row_argmax", np.float32, 1, 32, args)
        with pytest.raises(TypeError, match="uint8, uint16, uint32, got int32"):
            cuda.launch("indexed.cu", "row_argmax", np.float32, 1, 32, args, index_dtype=np.int32)
        with pytest.raises(TypeError, match="argument 2 points to 1-byte elements, got a uint16 array"):
            cuda.launch("indexed.cu", "row_argmax", np.float32, 1, 32, args, index_dtype=np.uint8)
