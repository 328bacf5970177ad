// conv2d_v3_implicit_gemm.cu — convolution v3: implicit GEMM with register blocking.
//
// Build:    nvcc -std=c++17 -arch=sm_90 --cubin kernels/conv2d_v3_implicit_gemm.cu
// Launch:   tinyseg/functional/conv_kernels_cuda.py (ConvV3Kernel, kernel names "cuda_v3", "cuda")
// Emulate:  with tinyseg.backend.cuda_emulation(): ... (the same source through g++)
// Previous: conv2d_v2_tiled.cu
//
// Each of the three sums of a convolution (see conv2d_v1_naive.cu) is a matrix product
// whose operands are the tensors themselves, read through index arithmetic:
//
//   forward      Y (O × N·Ho·Wo)    = W (O × C·kh·kw)      · cols (C·kh·kw × N·Ho·Wo)
//   input grad   dX (C × N·H·W)     = Wᵀ (C × O·kh·kw)     · G (O·kh·kw × N·H·W)
//   weight grad  dW (O × C·kh·kw)   = dY (O × N·Ho·Wo)     · colsᵀ (N·Ho·Wo × C·kh·kw)
//
// where cols[(c,u,v), (n,i,j)] = x[n,c, sh·i+dh·u−ph, sw·j+dw·v−pw] is im2col's matrix
// and G[(o,u,v), (n,h,w)] = dy[n,o,i,j] if h+ph−dh·u = sh·i and w+pw−dw·v = sw·j (i, j
// inside dy), else 0: the gather of v1's input gradient written as a matrix. Neither
// cols nor G is ever stored ("implicit" GEMM): the tile of it a block needs is computed
// on the fly while it is loaded into shared memory. So the input gradient needs no col2im
// and no atomics: every dx element has one writer, like every y and dW element.
//
// What changes versus v2, and why it is faster: REGISTER BLOCKING. In v2 each thread
// owns one pixel (× 8 channels) and each multiply-add costs about one shared-memory load.
// Here a block of 16×16 threads computes a BM×BN = 64×64 tile of the product, each
// thread a TM×TN = 4×4 sub-tile held in 16 registers; per step k of the inner loop a
// thread loads 4 values of A and 4 of B from shared memory and does 16 FMAs: 2 FMAs per
// shared load (v2: ~1, v1: 0.5 per global load). Tiles of A (BM×BK) and B (BK×BN, BK = 8)
// are staged in shared memory by all 256 threads, with two __syncthreads per step. And
// because the three primitives are one GEMM core with three operand readers, the
// gradients get the same treatment as the forward. Expected effect: ~2–4× v2, within
// ~1.5–3× of cuBLAS on the im2col matrix (which additionally double-buffers, uses
// vectorised 128-bit loads and larger 128×128 tiles; those are the next steps).
//
// Thread/block mapping (all three GEMMs): block (16, 16); blockIdx.x = column tile
// (64 columns of the N-dimension, which can be millions: x allows 2^31−1 blocks),
// blockIdx.y = row tile (64 rows of M), blockIdx.z = split of the K range (weight
// gradient only). Thread (tx, ty) computes rows m0 + ty + 16·r and columns
// n0 + tx + 16·c, r, c ∈ 0..3: rows and columns are interleaved with stride 16 rather than
// contiguous 4-blocks so that (a) the 16 threads of a half-warp read 16 consecutive words
// of a B row — no bank conflicts (contiguous 4-blocks would read every 4th word: 2-way
// conflicts) — and A reads are a broadcast; (b) the final stores of a warp hit 16
// consecutive output columns, i.e. consecutive addresses of y / dx / dW: coalesced.
//
// Loading: the 64×8 A tile and the 8×64 B tile hold 512 values each; every thread loads
// 2 of each. For B a thread's column is the same in every step (column tid mod 64), so
// the decoding of the column index ((n, i, j) or (c, u, v)) is done once per thread,
// before the K loop; only the row index is decoded per load. B loads: 32 consecutive
// columns per warp = consecutive x / dy addresses at stride 1: coalesced. A is stored
// transposed (As[k][m]) with a pad of 4 words per row: the store pattern k = tid mod 8,
// m = tid / 8 then hits 32 distinct banks (unpadded, 8-way conflicts).
//
// Arithmetic intensity: per block step, 2·64·64·8 FLOP for 2·64·8 loaded values:
// 64 FLOP per value (16 FLOP/byte float32, 8 double) from L2/DRAM — above the H200's
// FP32 ridge (67 TFLOP/s / 4.8 TB/s ≈ 14 FLOP/byte) and its FP64 one (34 / 4.8 ≈ 7), and
// most of those loads hit L2 (neighbouring blocks share their A or B tiles): the kernel
// is compute-bound (FP32 non-tensor roof, 67 TFLOP/s; FP64 34 TFLOP/s). What
// it actually reaches is limited by the instruction mix: the index arithmetic of the
// implicit operands (integer divisions per load) and the two barriers per 8-deep step.
//
// The input gradient as a GEMM pays for the zeros of G: with stride s only 1/(sh·sw) of
// the (u, v) taps of a pixel are real, so a 2×2 stride-2 up-convolution (conv_transpose2d's
// forward is this input gradient) does 4× the needed FLOPs. A sub-pixel split (one dense
// GEMM per stride phase) would remove that; it is left as the exercise after v3.
//
// Weight gradient: M = O and N = C·kh·kw are small, K = N·Ho·Wo is huge (O = C = 64 at
// 256², batch 8: 9 tiles of 64×64 each summing 524,288 products). Nine blocks would
// leave 123 of the H200's 132 SMs idle, so the K range is split over blockIdx.z: split z
// writes its partial product to its own slice of a workspace, and
// conv2d_v3_sum_splits adds the slices in the order z = 0, 1, … — the result is the
// same bits on every run (an atomicAdd into dW would not be).

#define V3_BM 64
#define V3_BN 64
#define V3_BK 8
#define V3_TM 4
#define V3_TN 4
#define V3_THREADS_X 16                  // V3_BN / V3_TN
#define V3_THREADS_Y 16                  // V3_BM / V3_TM
#define V3_A_PAD 4

// The shared GEMM core: C_tile = A (M × K) · B (K × columns) over k ∈ [k_begin, k_end),
// A, B and the store given by the Problem (one per primitive, below).
template <typename T, typename Problem>
__device__ __forceinline__ void v3_gemm_tile(const Problem& problem, long long k_begin, long long k_end) {
    __shared__ T As[V3_BK][V3_BM + V3_A_PAD];
    __shared__ T Bs[V3_BK][V3_BN];
    const int tx = int(threadIdx.x), ty = int(threadIdx.y), tid = ty * V3_THREADS_X + tx;
    const int m0 = int(blockIdx.y) * V3_BM;
    const long long n0 = (long long)blockIdx.x * V3_BN;

    // What this thread loads each step: A rows a_m, a_m + 32 at depth a_k; B column b_n at
    // depths b_k, b_k + 4.
    const int a_k = tid % V3_BK, a_m = tid / V3_BK;
    const int b_n = tid % V3_BN, b_k = tid / V3_BN;
    const typename Problem::Column column = problem.column(n0 + b_n);

    T acc[V3_TM][V3_TN];
#pragma unroll
    for (int r = 0; r < V3_TM; ++r)
#pragma unroll
        for (int c = 0; c < V3_TN; ++c) acc[r][c] = T(0);

    for (long long k0 = k_begin; k0 < k_end; k0 += V3_BK) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int m = m0 + a_m + 32 * e;
            const long long k = k0 + a_k;
            As[a_k][a_m + 32 * e] = (m < problem.M && k < k_end) ? problem.a(m, k) : T(0);
            const long long kb = k0 + b_k + 4 * e;
            Bs[b_k + 4 * e][b_n] = kb < k_end ? problem.b(kb, column) : T(0);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < V3_BK; ++kk) {
            T a[V3_TM], b[V3_TN];
#pragma unroll
            for (int r = 0; r < V3_TM; ++r) a[r] = As[kk][ty + V3_THREADS_Y * r];
#pragma unroll
            for (int c = 0; c < V3_TN; ++c) b[c] = Bs[kk][tx + V3_THREADS_X * c];
#pragma unroll
            for (int r = 0; r < V3_TM; ++r)
#pragma unroll
                for (int c = 0; c < V3_TN; ++c) acc[r][c] += a[r] * b[c];
        }
        __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < V3_TM; ++r) {
        const int m = m0 + ty + V3_THREADS_Y * r;
        if (m >= problem.M) continue;
#pragma unroll
        for (int c = 0; c < V3_TN; ++c) {
            const long long n = n0 + tx + V3_THREADS_X * c;
            if (n < problem.columns) problem.store(m, n, acc[r][c]);
        }
    }
}

// ----- forward: A = W (O × C·kh·kw), B = cols (C·kh·kw × N·Ho·Wo), columns (n, i, j)

template <typename T>
struct V3Forward {
    const T* x; const T* weight; T* y;
    int C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
    int M; long long columns, K;

    struct Column { const T* plane0; int h0, w0; bool valid; };   // x[n, 0], top-left of window (i, j)

    __device__ __forceinline__ T a(int m, long long k) const { return weight[(long long)m * K + k]; }
    __device__ __forceinline__ Column column(long long n) const {
        Column col{x, 0, 0, n < columns};
        if (!col.valid) return col;
        const long long plane = (long long)Ho * Wo;
        const long long p = n % plane;
        col.plane0 = x + (n / plane) * C * H * W;
        col.h0 = int(p / Wo) * sh - ph;
        col.w0 = int(p % Wo) * sw - pw;
        return col;
    }
    __device__ __forceinline__ T b(long long k, const Column& col) const {
        if (!col.valid) return T(0);
        const int taps = kh * kw, c = int(k / taps), t = int(k % taps);
        const int h = col.h0 + dh * (t / kw), w = col.w0 + dw * (t % kw);
        return (h >= 0 && h < H && w >= 0 && w < W) ? col.plane0[((long long)c * H + h) * W + w] : T(0);
    }
    __device__ __forceinline__ void store(int m, long long n, T value) const {
        const long long plane = (long long)Ho * Wo;
        y[((n / plane) * O + m) * plane + n % plane] = value;
    }
};

// Forward: y = conv2d(x, W). Grid (⌈N·Ho·Wo/64⌉, ⌈O/64⌉), block (16, 16).
template <typename T>
__global__ __launch_bounds__(256) void conv2d_v3_forward(
        const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y,
        int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
        int sh, int sw, int ph, int pw, int dh, int dw) {
    const V3Forward<T> problem{x, weight, y, C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                               O, (long long)N * Ho * Wo, (long long)C * kh * kw};
    v3_gemm_tile<T>(problem, 0, problem.K);
}

// ----- input gradient: A = Wᵀ (C × O·kh·kw), B = G (O·kh·kw × N·H·W), columns (n, h, w)

template <typename T>
struct V3InputGrad {
    const T* dy; const T* weight; T* dx;
    int C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
    int M; long long columns, K;

    struct Column { const T* grad0; int row, col; bool valid; };  // dy[n, 0]; (h + ph, w + pw)

    __device__ __forceinline__ T a(int m, long long k) const {      // Wᵀ[c, (o,u,v)] = W[o, c, u, v]
        const int taps = kh * kw;
        return weight[((k / taps) * C + m) * taps + k % taps];
    }
    __device__ __forceinline__ Column column(long long n) const {
        Column col{dy, 0, 0, n < columns};
        if (!col.valid) return col;
        const long long plane = (long long)H * W;
        const long long p = n % plane;
        col.grad0 = dy + (n / plane) * O * Ho * Wo;
        col.row = int(p / W) + ph;
        col.col = int(p % W) + pw;
        return col;
    }
    __device__ __forceinline__ T b(long long k, const Column& col) const {
        if (!col.valid) return T(0);
        const int taps = kh * kw, o = int(k / taps), t = int(k % taps);
        const int row = col.row - dh * (t / kw), column = col.col - dw * (t % kw);
        if (row < 0 || column < 0 || row % sh != 0 || column % sw != 0) return T(0);
        const int i = row / sh, j = column / sw;
        return (i < Ho && j < Wo) ? col.grad0[((long long)o * Ho + i) * Wo + j] : T(0);
    }
    __device__ __forceinline__ void store(int m, long long n, T value) const {
        const long long plane = (long long)H * W;
        dx[((n / plane) * C + m) * plane + n % plane] = value;
    }
};

// Input gradient: dx from dy and W. Grid (⌈N·H·W/64⌉, ⌈C/64⌉), block (16, 16).
template <typename T>
__global__ __launch_bounds__(256) void conv2d_v3_input_grad(
        const T* __restrict__ dy, const T* __restrict__ weight, T* __restrict__ dx,
        int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
        int sh, int sw, int ph, int pw, int dh, int dw) {
    const V3InputGrad<T> problem{dy, weight, dx, C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                                 C, (long long)N * H * W, (long long)O * kh * kw};
    v3_gemm_tile<T>(problem, 0, problem.K);
}

// ----- weight gradient: A = dY (O × N·Ho·Wo), B = colsᵀ (N·Ho·Wo × C·kh·kw), columns (c, u, v)

template <typename T>
struct V3WeightGrad {
    const T* x; const T* dy; T* partial;
    int C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
    int M; long long columns, K;

    struct Column { long long channel_offset; int h_offset, w_offset; bool valid; };   // c·H·W, dh·u − ph, dw·v − pw

    __device__ __forceinline__ T a(int m, long long k) const {      // dY[o, (n,i,j)]
        const long long plane = (long long)Ho * Wo;
        return dy[((k / plane) * O + m) * plane + k % plane];
    }
    __device__ __forceinline__ Column column(long long n) const {
        Column col{0, 0, 0, n < columns};
        if (!col.valid) return col;
        const int taps = kh * kw, t = int(n % taps);
        col.channel_offset = (n / taps) * H * W;
        col.h_offset = dh * (t / kw) - ph;
        col.w_offset = dw * (t % kw) - pw;
        return col;
    }
    __device__ __forceinline__ T b(long long k, const Column& col) const {
        if (!col.valid) return T(0);
        const long long plane = (long long)Ho * Wo;
        const long long sample = k / plane, p = k % plane;
        const int h = int(p / Wo) * sh + col.h_offset, w = int(p % Wo) * sw + col.w_offset;
        return (h >= 0 && h < H && w >= 0 && w < W) ? x[sample * C * H * W + col.channel_offset + (long long)h * W + w]
                                                    : T(0);
    }
    __device__ __forceinline__ void store(int m, long long n, T value) const {
        partial[((long long)blockIdx.z * M + m) * columns + n] = value;
    }
};

// Weight gradient, split-K: partial[z] = dY · colsᵀ over the z-th range of k_per_split
// positions (a multiple of V3_BK). Grid (⌈C·kh·kw/64⌉, ⌈O/64⌉, splits), block (16, 16).
// With one split, `partial` is dW itself.
template <typename T>
__global__ __launch_bounds__(256) void conv2d_v3_weight_grad(
        const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ partial,
        int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
        int sh, int sw, int ph, int pw, int dh, int dw, long long k_per_split) {
    const V3WeightGrad<T> problem{x, dy, partial, C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                                  O, (long long)C * kh * kw, (long long)N * Ho * Wo};
    const long long k_begin = (long long)blockIdx.z * k_per_split;
    const long long k_end = k_begin + k_per_split < problem.K ? k_begin + k_per_split : problem.K;
    v3_gemm_tile<T>(problem, k_begin, k_end);
}

// dW[e] = Σ_z partial[z][e], z = 0, 1, … in order (deterministic). One thread per dW
// element, grid-stride; coalesced reads of each slice. Memory-bound and tiny (O·C·kh·kw
// elements × splits).
template <typename T>
__global__ void conv2d_v3_sum_splits(const T* __restrict__ partial, T* __restrict__ dweight,
                                     long long count, int splits) {
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < count;
         e += (long long)gridDim.x * blockDim.x) {
        T sum = T(0);
        for (int z = 0; z < splits; ++z) sum += partial[(long long)z * count + e];
        dweight[e] = sum;
    }
}
