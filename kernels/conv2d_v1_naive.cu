// conv2d_v1_naive.cu — convolution v1: one thread per output element, straight from the definition.
//
// Build:    nvcc -std=c++17 -arch=sm_90 --cubin kernels/conv2d_v1_naive.cu
// Launch:   tinyseg/functional/conv_kernels_cuda.py (ConvV1Kernel, kernel name "cuda_v1")
// Emulate:  with tinyseg.backend.cuda_emulation(): ... (the same source through g++)
// Next:     conv2d_v2_tiled.cu (shared-memory tiles), conv2d_v3_implicit_gemm.cu (register blocking)
//
// The convolution of x (N, C, H, W) with W (O, C, kh, kw), stride (sh, sw), dilation
// (dh, dw), top/left padding (ph, pw; negative crops) and an explicit output size
// (Ho, Wo) — conv_transpose2d asks for fewer windows than fit, and the flipped-kernel
// view of a gradient crops — is three loops over the same index set {n, o, c, i, j, u, v}:
//
//   forward       y[n,o,i,j]  = Σ_{c,u,v} W[o,c,u,v] · x[n,c, sh·i+dh·u−ph, sw·j+dw·v−pw]
//   input grad    dx[n,c,h,w] = Σ_{o,u,v} W[o,c,u,v] · dy[n,o,i,j]
//                               over (h+ph−dh·u, w+pw−dw·v) = (sh·i, sw·j), i < Ho, j < Wo
//   weight grad   dW[o,c,u,v] = Σ_{n,i,j} dy[n,o,i,j] · x[n,c, sh·i+dh·u−ph, sw·j+dw·v−pw]
//
// (x is 0 outside the image.) Each kernel gives every output element its own thread,
// which sums its terms in registers and writes once: no atomics, no shared memory, no
// races, the same bits on every run. That is the whole idea of v1, and its weakness:
// every multiply-add reads both operands from global memory (through L1/L2), so the
// kernels are bound by cache bandwidth and latency at well under 10 % of the FP32 roof.
// v2 stages operands in shared memory; v3 adds register blocking.
//
// Sizes: flat counts are `long long`, geometry `int`. Blocks of 256 threads, grid-stride
// loops, grid capped by the launcher.

// ---------------------------------------------------------------------------------------
// Forward. Thread/block mapping: one thread per y[n,o,i,j], flat index with j fastest.
//
// Memory access: a warp covers 32 consecutive j of one output row (one (n, o)): y writes
// coalesced; x reads for a tap (c,u,v) are 32 pixels of one input row at stride sw —
// coalesced for stride 1; W[o,c,u,v] is the same address for the whole warp (a broadcast,
// served by L1). Each x element is re-read by O·kh·kw threads, each W element by
// N·Ho·Wo threads, all from cache, none kept.
//
// Arithmetic intensity: 2 FLOP per 2 loads (8 bytes float32) from L1/L2 → 0.25 FLOP/byte
// at the cache level. In DRAM terms the data is small (a U-Net layer's x and W fit in
// the H200's 50 MB L2 many times over) so HBM is not the limit: the L1/L2 load
// throughput and the index arithmetic are. Expect a few % of the 67 TFLOP/s FP32 roof.
template <typename T>
__global__ void conv2d_v1_forward(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y,
                                  int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                  int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long total = (long long)N * O * Ho * Wo;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int j = int(e % Wo);
        const int i = int((e / Wo) % Ho);
        const int o = int((e / ((long long)Wo * Ho)) % O);
        const long long n = e / ((long long)Wo * Ho * O);
        T sum = T(0);
        for (int c = 0; c < C; ++c) {
            const T* plane = x + (n * C + c) * H * W;
            const T* kernel = weight + ((long long)o * C + c) * kh * kw;
            for (int u = 0; u < kh; ++u) {
                const int h = sh * i + dh * u - ph;
                if (h < 0 || h >= H) continue;
                for (int v = 0; v < kw; ++v) {
                    const int w = sw * j + dw * v - pw;
                    if (w < 0 || w >= W) continue;
                    sum += kernel[u * kw + v] * plane[(long long)h * W + w];
                }
            }
        }
        y[e] = sum;
    }
}

// ---------------------------------------------------------------------------------------
// Input gradient (a gather). Thread/block mapping: one thread per dx[n,c,h,w], w fastest.
//
// The thread finds, for each tap (u, v), the window that read x[n,c,h,w] through that tap:
// row sh·i = h + ph − dh·u must be a non-negative multiple of sh with i < Ho (and likewise
// for columns); then it adds W[o,c,u,v] · dy[n,o,i,j] for every o. A scatter (one thread
// per dy element adding into dx) would need atomicAdd — non-deterministic in float — so
// v1 gathers. This handles stride, dilation, any padding (negative included) and the
// explicit output size, which is exactly what conv_transpose2d's forward needs.
//
// Memory access: dx writes coalesced. dy reads for a tap follow w with step 1/sw: a warp
// reads ~32/sw consecutive dy values (coalesced); W[o,c,u,v] is a warp-wide broadcast.
// With stride > 1 the taps that do not divide are skipped: threads of a warp diverge by
// the parity of w, wasting part of each warp (v3 accepts the same waste inside a GEMM).
//
// Arithmetic intensity: as the forward, ~0.25 FLOP/byte at the cache level; bound by
// L1/L2 load throughput, a few % of the FP32 roof.
template <typename T>
__global__ void conv2d_v1_input_grad(const T* __restrict__ dy, const T* __restrict__ weight, T* __restrict__ dx,
                                     int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                     int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long total = (long long)N * C * H * W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int w = int(e % W);
        const int h = int((e / W) % H);
        const int c = int((e / ((long long)W * H)) % C);
        const long long n = e / ((long long)W * H * C);
        T sum = T(0);
        for (int u = 0; u < kh; ++u) {
            const int row = h + ph - dh * u;
            if (row < 0 || row % sh != 0 || row / sh >= Ho) continue;
            const int i = row / sh;
            for (int v = 0; v < kw; ++v) {
                const int column = w + pw - dw * v;
                if (column < 0 || column % sw != 0 || column / sw >= Wo) continue;
                const int j = column / sw;
                for (int o = 0; o < O; ++o)
                    sum += weight[(((long long)o * C + c) * kh + u) * kw + v] *
                           dy[((n * O + o) * Ho + i) * Wo + j];
            }
        }
        dx[e] = sum;
    }
}

// ---------------------------------------------------------------------------------------
// Weight gradient. Thread/block mapping: one thread per dW[o,c,u,v] (v fastest), each
// summing N·Ho·Wo products in a serial loop over (n, i, j).
//
// This is the naive kernel at its worst: only O·C·kh·kw threads (36,864 for a 64→64
// 3×3 layer: under a seventh of the 270,336 threads the H200's 132 SMs hold at once, and
// 576 for U-Net's 1→64 first layer) and each runs a long serial loop (N·Ho·Wo = 524,288 for a batch of 8 at 256²).
// Memory access: within a warp, threads differ in (u, v) and then c: for a fixed (n,i,j)
// they read x at nearby addresses (the kh·kw taps of one window, then other channels:
// scattered) and the same dy element (broadcast). Uncoalesced x reads, long latency
// chains, low occupancy: expect well under 1 % of the FP32 roof on large images. v2
// gives each dW element a whole block and reduces in shared memory; v3 treats it as a
// GEMM with split-K.
template <typename T>
__global__ void conv2d_v1_weight_grad(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dweight,
                                      int N, int C, int H, int W, int O, int Ho, int Wo, int kh, int kw,
                                      int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long total = (long long)O * C * kh * kw;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int v = int(e % kw);
        const int u = int((e / kw) % kh);
        const int c = int((e / ((long long)kw * kh)) % C);
        const int o = int(e / ((long long)kw * kh * C));
        T sum = T(0);
        for (int n = 0; n < N; ++n) {
            const T* plane = x + ((long long)n * C + c) * H * W;
            const T* grad = dy + ((long long)n * O + o) * Ho * Wo;
            for (int i = 0; i < Ho; ++i) {
                const int h = sh * i + dh * u - ph;
                if (h < 0 || h >= H) continue;
                for (int j = 0; j < Wo; ++j) {
                    const int w = sw * j + dw * v - pw;
                    if (w < 0 || w >= W) continue;
                    sum += grad[(long long)i * Wo + j] * plane[(long long)h * W + w];
                }
            }
        }
        dweight[e] = sum;
    }
}
