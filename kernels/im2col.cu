// im2col.cu — the im2col matrix of a convolution's input, and col2im as a gather.
//
// Build:    nvcc -std=c++17 -arch=sm_90 --cubin kernels/im2col.cu   (tinyseg: cupy.RawModule)
// Launch:   tinyseg/functional/conv_kernels_cuda.py (Im2colCudaKernel, kernel name "cuda_im2col")
// Emulate:  with tinyseg.backend.cuda_emulation(): ... (the same source through g++)
//
// The convolution y = conv2d(x, W) of x (N, C, H, W) with W (O, C, kh, kw), stride
// (sh, sw), dilation (dh, dw), padding top/left (ph, pw; negative crops) and an explicit
// output size (Ho, Wo), written as N matrix products:
//
//   cols[n, (c,u,v), (i,j)] = x[n, c, sh·i + dh·u − ph, sw·j + dw·v − pw]   (0 outside x)
//   y[n] = W (O × C·kh·kw) · cols[n] (C·kh·kw × Ho·Wo)                       (cuBLAS)
//
// This is the baseline every hand-written convolution (conv2d_v1..v3) is measured
// against: the GEMM is cuBLAS's (near the FP32 roof for large layers), and the price is
// the cols matrix, kh·kw times the input, written once and read back once.
//
// The input gradient is the adjoint: dcols[n] = Wᵀ · dY[n] (cuBLAS), then col2im folds
// dcols back onto x. col2im here is a GATHER — one thread per dx element, summing the
// dcols entries of the windows that read it, in a fixed (u, v) order — not the usual
// scatter with atomicAdd (one thread per dcols entry adding into dx): no atomics, one
// writer per dx element, the same bits on every run.
//
// Sizes are `long long` for the flat element counts (N·C·kh·kw·Ho·Wo exceeds 2^31 for a
// 64-channel 512² batch) and `int` for the geometry.

// ---------------------------------------------------------------------------------------
// im2col: cols (N, C·kh·kw, Ho·Wo) from x (N, C, H, W).
//
// Thread/block mapping: one thread per element of cols, flat index
//   e = ((n·C + c)·kh·kw + u·kw + v)·Ho·Wo + i·Wo + j,
// j fastest, in a grid-stride loop over 256-thread blocks (the launcher caps the grid).
//
// Memory access: writes are perfectly coalesced (a warp writes 32 consecutive elements
// of cols). Reads of x follow j with stride sw: coalesced for stride 1 (a warp reads
// 32 consecutive pixels of one row, shifted by the tap), half-efficient for stride 2.
// Every x element is read kh·kw times, mostly from L2 (the 9 taps of a 3×3 kernel hit
// the same lines). No shared memory.
//
// Arithmetic intensity: 0 FLOP — a pure copy of kh·kw·|x| elements: bound by HBM
// bandwidth (H200 ~4.8 TB/s). For a 3×3 layer it moves ~9× the input once out and once
// back in (by the GEMM): the cost the implicit GEMM of conv2d_v3 avoids.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols,
                       int N, int C, int H, int W, int Ho, int Wo, int kh, int kw,
                       int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long plane = (long long)Ho * Wo;
    const long long total = (long long)N * C * kh * kw * plane;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long p = e % plane;
        const long long row = e / plane;                 // (n·C + c)·kh·kw + u·kw + v
        const int v = int(row % kw);
        const int u = int((row / kw) % kh);
        const long long nc = row / ((long long)kh * kw);   // n·C + c
        const int i = int(p / Wo), j = int(p % Wo);
        const int h = sh * i + dh * u - ph, w = sw * j + dw * v - pw;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(nc * H + h) * W + w] : T(0);
    }
}

// ---------------------------------------------------------------------------------------
// col2im (gather): dx (N, C, H, W) from dcols (N, C·kh·kw, Ho·Wo).
//
//   dx[n,c,h,w] = Σ_{u,v} dcols[n, (c,u,v), (i,j)]
//                 over the taps with h + ph − dh·u = sh·i, w + pw − dw·v = sw·j,
//                 0 ≤ i < Ho, 0 ≤ j < Wo
//
// Thread/block mapping: one thread per dx element, w fastest, grid-stride loop. Each
// thread visits the kh·kw taps; a tap contributes only where the offset divides by the
// stride (for stride 2, a quarter of the taps of a 2-D kernel), so threads of a warp
// diverge by parity — cheap next to the memory traffic.
//
// Memory access: dx writes coalesced; dcols reads for a fixed tap follow w with stride
// 1/sw (consecutive threads read the same or the next column): coalesced. No shared
// memory, no atomics.
//
// Arithmetic intensity: kh·kw adds per dx element over kh·kw·|dx|/(sh·sw) elements
// read: ~0.25 FLOP/byte (float32). Bound by HBM bandwidth.
template <typename T>
__global__ void col2im_gather(const T* __restrict__ dcols, T* __restrict__ dx,
                              int N, int C, int H, int W, int Ho, int Wo, int kh, int kw,
                              int sh, int sw, int ph, int pw, int dh, int dw) {
    const long long total = (long long)N * C * H * W;
    const long long plane = (long long)Ho * Wo;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int w = int(e % W);
        const int h = int((e / W) % H);
        const long long nc = e / ((long long)H * W);      // n·C + c
        T sum = T(0);
        for (int u = 0; u < kh; ++u) {
            const int row = h + ph - dh * u;               // = sh·i for the window that reads it
            if (row < 0 || row % sh != 0 || row / sh >= Ho) continue;
            const int i = row / sh;
            for (int v = 0; v < kw; ++v) {
                const int column = w + pw - dw * v;
                if (column < 0 || column % sw != 0 || column / sw >= Wo) continue;
                sum += dcols[((nc * kh + u) * kw + v) * plane + (long long)i * Wo + column / sw];
            }
        }
        dx[e] = sum;
    }
}
