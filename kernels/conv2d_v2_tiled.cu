// conv2d_v2_tiled.cu — convolution v2: shared-memory tiles of the input and the weights.
//
// Build:    nvcc -std=c++17 -arch=sm_90 --cubin kernels/conv2d_v2_tiled.cu
// Launch:   tinyseg/functional/conv_kernels_cuda.py (ConvV2Kernel, kernel name "cuda_v2")
// Emulate:  with tinyseg.backend.cuda_emulation(): ... (the same source through g++)
// Previous: conv2d_v1_naive.cu      Next: conv2d_v3_implicit_gemm.cu
//
// Same three sums as v1 (see its header), same geometry arguments. What changes, and why
// it is faster:
//
// * v1 reads every operand of every multiply-add from global memory: each x element is
//   fetched (from L1/L2) by O·kh·kw threads, each weight by N·Ho·Wo threads. v2 gives a
//   BLOCK a tile of output pixels for a GROUP of output channels: the block copies the
//   input patch its tile reads (the tile plus the halo of the kernel) and the group's
//   weights into shared memory once per input channel, and all its threads then read
//   them from there. Global traffic for x drops by ~O/GROUP·kh·kw, for W by the tile
//   size; each thread keeps GROUP accumulators in registers, so one x value loaded from
//   shared memory feeds GROUP multiply-adds (v1: one).
// * The input gradient becomes the same tiled gather, on dy: a tile of dx pixels for a
//   group of input channels stages, per output channel, the dy patch its gather reads.
// * The weight gradient gets a whole block per (o, c) instead of one thread per
//   dW[o,c,u,v]: the block's threads stride over the N·Ho·Wo positions with coalesced
//   reads, keep one accumulator per tap in registers, and finish with a tree reduction
//   in shared memory in a fixed order (deterministic, no atomics).
//
// Expected effect: forward and input gradient several times v1 (from L1/L2-load-bound to
// shared-memory-bound), weight gradient one to two orders of magnitude on large images
// (from 36k serial threads to O·C blocks of 256). Still one output per (thread, channel):
// per multiply-add ~one shared-memory load, which caps v2 at roughly a quarter of the
// FP32 roof; v3's register blocking removes that cap.

#define V2_GROUP 8          // output channels per block (forward), input channels (input grad)
#define V2_TAPS 9           // weight-gradient taps accumulated in registers per pass over the data
#define V2_REDUCE_THREADS 256

// Floor division and modulo that hold for negative numerators (C++'s / truncates toward 0).
__device__ __forceinline__ int v2_floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// ---------------------------------------------------------------------------------------
// Forward.
//
// Thread/block mapping: block (TW, TH) = blockDim (16×16 by default, 8×8 when the patch
// would not fit in 48 KB) computes the output tile i ∈ [i0, i0+TH), j ∈ [j0, j0+TW) for
// output channels [g0, g0+V2_GROUP) of sample n: blockIdx = (j tile, i tile,
// n·groups + group). Thread (tx, ty) owns pixel (i0+ty, j0+tx) and V2_GROUP accumulators.
//
// Shared memory (dynamic): the input patch of one channel, PH×PW with
// PH = (TH−1)·sh + (kh−1)·dh + 1 (the tile plus its halo; 18×18 for 16×16 and 3×3), then
// the group's weights for that channel, V2_GROUP·kh·kw. Loaded cooperatively (thread t
// loads elements t, t+256, …: consecutive threads read consecutive pixels of a row, so
// the global loads coalesce), zero where the patch leaves the image — the padding costs
// nothing after the load. Two __syncthreads per input channel: after the load (patch
// complete) and after the compute (nobody overwrites it while another thread reads).
//
// Bank conflicts: a warp is two rows of 16 threads; at stride 1 each half reads 16
// consecutive words (distinct banks) and the halves are PW words apart, so they collide
// on a couple of banks at most (2-way on those). Weight reads are one address per warp
// (a broadcast, no conflict).
//
// Arithmetic intensity: per (channel, tap) a thread does V2_GROUP FMAs for 1 patch load
// plus V2_GROUP broadcast weight loads; from global memory each block reads PH·PW + 8·kh·kw
// values per channel for TH·TW·8·kh·kw FMAs (396 values for 18,432 FMAs with 16×16 tiles
// and 3×3: ~23 FLOP/byte float32, ~12 double), right of the H200's FP32 ridge (~14
// FLOP/byte) and mostly served by L2 anyway: not HBM-bound but shared-memory-issue-bound.
template <typename T>
__global__ void conv2d_v2_forward(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y,
                                  int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int dh, int dw) {
    extern __shared__ __align__(16) unsigned char raw[];
    const int TW = int(blockDim.x), TH = int(blockDim.y);
    const int PH = (TH - 1) * sh + (kh - 1) * dh + 1, PW = (TW - 1) * sw + (kw - 1) * dw + 1;
    const int taps = kh * kw;
    T* patch = reinterpret_cast<T*>(raw);                    // [PH][PW]
    T* weights = patch + PH * PW;                            // [V2_GROUP][kh·kw]

    const int groups = (O + V2_GROUP - 1) / V2_GROUP;
    const int n = int(blockIdx.z) / groups, g0 = (int(blockIdx.z) % groups) * V2_GROUP;
    const int i0 = int(blockIdx.y) * TH, j0 = int(blockIdx.x) * TW;
    const int tx = int(threadIdx.x), ty = int(threadIdx.y), tid = ty * TW + tx, threads = TW * TH;
    const int top = i0 * sh - ph, left = j0 * sw - pw;       // the patch's first input row and column

    T acc[V2_GROUP];
#pragma unroll
    for (int g = 0; g < V2_GROUP; ++g) acc[g] = T(0);

    for (int c = 0; c < C; ++c) {
        const T* plane = x + ((long long)n * C + c) * H * W;
        for (int e = tid; e < PH * PW; e += threads) {
            const int h = top + e / PW, w = left + e % PW;
            patch[e] = (h >= 0 && h < H && w >= 0 && w < W) ? plane[(long long)h * W + w] : T(0);
        }
        for (int e = tid; e < V2_GROUP * taps; e += threads) {
            const int o = g0 + e / taps;
            weights[e] = o < O ? weight[((long long)o * C + c) * taps + e % taps] : T(0);
        }
        __syncthreads();
        for (int u = 0; u < kh; ++u)
            for (int v = 0; v < kw; ++v) {
                const T value = patch[(ty * sh + u * dh) * PW + tx * sw + v * dw];
#pragma unroll
                for (int g = 0; g < V2_GROUP; ++g) acc[g] += weights[g * taps + u * kw + v] * value;
            }
        __syncthreads();
    }
    const int i = i0 + ty, j = j0 + tx;
    if (i < Ho && j < Wo) {
#pragma unroll
        for (int g = 0; g < V2_GROUP; ++g)
            if (g0 + g < O) y[(((long long)n * O + g0 + g) * Ho + i) * Wo + j] = acc[g];
    }
}

// ---------------------------------------------------------------------------------------
// Input gradient: the tiled gather.
//
// Thread/block mapping: block (TW, TH) owns the dx tile h ∈ [h0, h0+TH), w ∈ [w0, w0+TW)
// of input channels [c0, c0+V2_GROUP) of sample n: blockIdx = (w tile, h tile,
// n·groups + group); thread (tx, ty) owns pixel (h0+ty, w0+tx) and V2_GROUP accumulators.
//
// Which dy does the tile read? Pixel h receives dy row i from tap u when
// h + ph − dh·u = sh·i. Over the tile and all taps, i runs from
// i_lo = ⌈(h0 + ph − dh·(kh−1)) / sh⌉ to i_hi = ⌊(h0 + TH − 1 + ph) / sh⌋: at most
// PH = (TH − 1 + dh·(kh−1)) / sh + 1 rows (likewise columns). Per output channel o the
// block stages that dy patch (zero outside 0 ≤ i < Ho, 0 ≤ j < Wo) and W[o, c0.., :, :]
// in shared memory, then each thread walks its taps: a tap whose offset is a multiple
// of the stride reads patch[i − i_lo][j − j_lo] and adds V2_GROUP products.
//
// Memory access: patch loads coalesce along j; shared reads at stride 1 are consecutive
// words (conflict-free within each row of 16); at stride 2 two neighbouring threads read
// the same word (a broadcast) — also conflict-free. Weight reads are warp-wide broadcasts.
// Stride > 1 leaves (sh·sw − 1)/(sh·sw) of the (pixel, tap) pairs idle, divergent by
// parity within a warp.
//
// Arithmetic intensity and roof: as the forward (shared-memory-issue-bound).
template <typename T>
__global__ void conv2d_v2_input_grad(const T* __restrict__ dy, const T* __restrict__ weight, T* __restrict__ dx,
                                     int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                     int sh, int sw, int ph, int pw, int dh, int dw) {
    extern __shared__ __align__(16) unsigned char raw[];
    const int TW = int(blockDim.x), TH = int(blockDim.y);
    const int PH = (TH - 1 + dh * (kh - 1)) / sh + 1, PW = (TW - 1 + dw * (kw - 1)) / sw + 1;
    const int taps = kh * kw;
    T* patch = reinterpret_cast<T*>(raw);                    // [PH][PW] of dy
    T* weights = patch + PH * PW;                            // [V2_GROUP][kh·kw]

    const int groups = (C + V2_GROUP - 1) / V2_GROUP;
    const int n = int(blockIdx.z) / groups, c0 = (int(blockIdx.z) % groups) * V2_GROUP;
    const int h0 = int(blockIdx.y) * TH, w0 = int(blockIdx.x) * TW;
    const int tx = int(threadIdx.x), ty = int(threadIdx.y), tid = ty * TW + tx, threads = TW * TH;
    const int i_lo = v2_floor_div(h0 + ph - dh * (kh - 1) + sh - 1, sh);
    const int j_lo = v2_floor_div(w0 + pw - dw * (kw - 1) + sw - 1, sw);
    const int h = h0 + ty, w = w0 + tx;

    T acc[V2_GROUP];
#pragma unroll
    for (int g = 0; g < V2_GROUP; ++g) acc[g] = T(0);

    for (int o = 0; o < O; ++o) {
        const T* grad = dy + ((long long)n * O + o) * Ho * Wo;
        for (int e = tid; e < PH * PW; e += threads) {
            const int i = i_lo + e / PW, j = j_lo + e % PW;
            patch[e] = (i >= 0 && i < Ho && j >= 0 && j < Wo) ? grad[(long long)i * Wo + j] : T(0);
        }
        for (int e = tid; e < V2_GROUP * taps; e += threads) {
            const int c = c0 + e / taps;
            weights[e] = c < C ? weight[((long long)o * C + c) * taps + e % taps] : T(0);
        }
        __syncthreads();
        for (int u = 0; u < kh; ++u) {
            const int row = h + ph - dh * u;
            const int i = v2_floor_div(row, sh);
            if (i * sh != row) continue;                      // no window reads h through tap u
            for (int v = 0; v < kw; ++v) {
                const int column = w + pw - dw * v;
                const int j = v2_floor_div(column, sw);
                if (j * sw != column) continue;
                const T value = patch[(i - i_lo) * PW + (j - j_lo)];
#pragma unroll
                for (int g = 0; g < V2_GROUP; ++g) acc[g] += weights[g * taps + u * kw + v] * value;
            }
        }
        __syncthreads();
    }
    if (h < H && w < W) {
#pragma unroll
        for (int g = 0; g < V2_GROUP; ++g)
            if (c0 + g < C) dx[(((long long)n * C + c0 + g) * H + h) * W + w] = acc[g];
    }
}

// ---------------------------------------------------------------------------------------
// Weight gradient: one block per (o, c), a block-level reduction.
//
// Thread/block mapping: blockIdx = (c, o), V2_REDUCE_THREADS (256) threads in x. Thread t
// takes positions p = t, t+256, … of the N·Ho·Wo output positions (p = (n·Ho + i)·Wo + j)
// and, for V2_TAPS taps at a time, accumulates dy[n,o,i,j] · x[n,c, sh·i+dh·u−ph, sw·j+dw·v−pw]
// in registers (a 3×3 kernel in one pass over the data; larger kernels in several).
// Then the block sums its 256 partials per tap by a tree in shared memory
// (partial[t][k] += partial[t][k + s] for s = 128, 64, …, 1), always in the same order:
// the result does not depend on timing (v1's serial loop did not either, but it ran on
// one thread per dW element).
//
// Memory access: consecutive threads take consecutive positions: dy reads coalesce;
// x reads coalesce at stride 1 (the kh·kw taps re-read the same lines from L1). Shared
// memory: V2_TAPS × 256 partials (18 KB double), written once per pass, read in the tree
// with consecutive threads on consecutive words (no bank conflicts).
//
// Arithmetic intensity: 2 FLOP per x load (dy is loaded once per 9 taps) from L1/L2,
// ~0.5 FLOP/byte float32 at the cache level; from DRAM x and dy are each read once per
// block column (O·C times in all — mostly L2 hits for a U-Net layer). Bound by L1/L2
// load throughput; O·C blocks of 256 fill the GPU for any layer past the first.
template <typename T>
__global__ void conv2d_v2_weight_grad(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dweight,
                                      int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                      int sh, int sw, int ph, int pw, int dh, int dw) {
    __shared__ T partial[V2_TAPS][V2_REDUCE_THREADS];
    const int c = int(blockIdx.x), o = int(blockIdx.y), t = int(threadIdx.x);
    const int taps = kh * kw;
    const long long positions = (long long)N * Ho * Wo;

    for (int first = 0; first < taps; first += V2_TAPS) {
        T acc[V2_TAPS];
#pragma unroll
        for (int k = 0; k < V2_TAPS; ++k) acc[k] = T(0);
        for (long long p = t; p < positions; p += V2_REDUCE_THREADS) {
            const int j = int(p % Wo), i = int((p / Wo) % Ho);
            const long long n = p / ((long long)Wo * Ho);
            const T grad = dy[((n * O + o) * Ho + i) * Wo + j];
            const T* plane = x + (n * C + c) * H * W;
#pragma unroll
            for (int k = 0; k < V2_TAPS; ++k) {
                if (first + k >= taps) break;
                const int u = (first + k) / kw, v = (first + k) % kw;
                const int h = sh * i + dh * u - ph, w = sw * j + dw * v - pw;
                if (h >= 0 && h < H && w >= 0 && w < W) acc[k] += grad * plane[(long long)h * W + w];
            }
        }
#pragma unroll
        for (int k = 0; k < V2_TAPS; ++k) partial[k][t] = acc[k];
        __syncthreads();
        for (int stride = V2_REDUCE_THREADS / 2; stride > 0; stride /= 2) {
            if (t < stride) {
#pragma unroll
                for (int k = 0; k < V2_TAPS; ++k) partial[k][t] += partial[k][t + stride];
            }
            __syncthreads();
        }
        if (t < V2_TAPS && first + t < taps)
            dweight[((long long)o * C + c) * taps + first + t] = partial[t][0];
        __syncthreads();                                      // partial is rewritten by the next pass
    }
}
