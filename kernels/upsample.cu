// upsample.cu — nearest and bilinear upsampling by integer factors, forward and backward.
//
//   planes = N·C, each plane (H, W) row-major; output planes (H', W') = (s_h·H, s_w·W).
//
//   upsample_nearest_forward:   y[p,i,j]  = x[p, ⌊i/s_h⌋, ⌊j/s_w⌋]
//   upsample_nearest_backward:  dx[p,a,b] = Σ_v Σ_u dy[p, s_h·a + u, s_w·b + v]    (its s_h × s_w block)
//   upsample_bilinear_forward:  y[p]  = A_h · x[p] · A_wᵀ
//   upsample_bilinear_backward: dx[p] = A_hᵀ · dy[p] · A_w
//
// Bilinear is separable: A_h (H' × H) and A_w (W' × W) are the interpolation matrices of
// tinyseg/functional/resize.py (PyTorch's source coordinates for align_corners False and
// True, rounded to T as PyTorch does). The kernels never see the matrices: they take
// GATHER TABLES, per row r of a matrix its K non-zero columns and weights
// (row_sources[r·K + k], row_weights[r·K + k]), built once on the host by
// resize._gather_table. For A (the forward) K = 2; for Aᵀ (the backward) row a lists the
// outputs that read input a, K ≈ 2·s. Short rows are padded with weight 0 on a column the
// row really uses, so a NaN reaches only the outputs that read it.
//
// So one body, bilinear_gather, serves both directions:
//   out[p, r, c] = Σ_l col_w[c, l] · (Σ_k row_w[r, k] · in[p, row_src[r, k], col_src[c, l]])
// forward with the tables of A_h, A_w; backward with those of A_hᵀ, A_wᵀ. The backward is
// therefore a GATHER: one thread per input element, reading the ≤ K·L output gradients
// that its weights touch — every dx element has one writer (no atomics, deterministic).
// The nearest backward is the same idea with 0/1 weights: one thread per input pixel
// sums its block of s_h·s_w gradients (the rows of each column first, as the CPU kernels).
//
// Thread/block mapping (all four): one thread per element of the kernel's output (y in the
// forwards, dx in the backwards), linear index split as (plane, row, column) with the
// column fastest, blocks of 256 threads, grid-stride loop, grid capped by the launcher
// (tinyseg/functional/resize_kernels_cuda.py).
//
// Memory access: writes are fully coalesced (consecutive threads, consecutive columns).
// Forward reads: the 32 lanes of a warp read x at columns ⌊j/s_w⌋ (nearest) or two
// neighbours of j/s_w (bilinear): 32/s_w + 1 distinct consecutive elements, one or two
// 128-byte lines, the repeats served as broadcasts. Backward reads: lane b reads dy at
// s_w·b + v, a stride-s_w pattern whose lines are fully used over the loop over v. The
// tables (a few KB) stay in L1/L2. No shared memory: each input element is re-read only
// s_h·s_w (nearest) or ~4 (bilinear) times, and the caches hold those re-reads.
//
// Arithmetic intensity (float32, scale 2): nearest forward moves 4 B read (amortised 1 B)
// + 4 B written per output for 0 FLOP; its backward reads 16 B and writes 4 B per input
// for 3 adds (0.15 FLOP/B). Bilinear forward: ~6 FLOP per output for ~5 B (reads mostly
// cached, tables included) — ~1 FLOP/B; backward ~ 2·K·L ≈ 32 FLOP per input for ~20 B
// of dy: ~1.5 FLOP/B. All far left of the H200's ridge point (~67 TFLOP/s / 4.8 TB/s ≈
// 14 FLOP/B): bandwidth-bound; e.g. the U-Net's last upsampling (batch 8, 128 channels,
// 128² -> 256²: 67 MB in, 268 MB out, float32) takes at best ≈ 70 µs.

template <typename T>
__global__ void upsample_nearest_forward(const T* __restrict__ x, T* __restrict__ y, long long planes, long long H,
                                         long long W, long long scale_h, long long scale_w) {
    const long long out_h = H * scale_h, out_w = W * scale_w;
    const long long total = planes * out_h * out_w;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long j = k % out_w;
        const long long i = (k / out_w) % out_h;
        const long long plane = k / (out_w * out_h);
        y[k] = x[(plane * H + i / scale_h) * W + j / scale_w];
    }
}

template <typename T>
__global__ void upsample_nearest_backward(const T* __restrict__ dy, T* __restrict__ dx, long long planes, long long H,
                                          long long W, long long scale_h, long long scale_w) {
    const long long out_h = H * scale_h, out_w = W * scale_w;
    const long long total = planes * H * W;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long b = k % W;
        const long long a = (k / W) % H;
        const T* block = dy + ((k / (W * H)) * out_h + scale_h * a) * out_w + scale_w * b;
        // The CPU kernels' order: the s_h rows of each column added first, then the columns.
        T block_sum = T(0);
        for (long long v = 0; v < scale_w; ++v) {
            T column_sum = block[v];
            for (long long u = 1; u < scale_h; ++u) column_sum += block[u * out_w + v];
            block_sum = v == 0 ? column_sum : block_sum + column_sum;
        }
        dx[k] = block_sum;
    }
}

// out[p, r, c] = Σ_l col_w[c, l] · Σ_k row_w[r, k] · in[p, row_src[r, k], col_src[c, l]]
// for out (planes, out_rows, out_cols) and in (planes, in_rows, in_cols).
template <typename T>
__device__ void bilinear_gather(const T* __restrict__ in, const long long* __restrict__ row_sources,
                                const T* __restrict__ row_weights, long long K,
                                const long long* __restrict__ column_sources, const T* __restrict__ column_weights,
                                long long L, T* __restrict__ out, long long planes, long long in_rows,
                                long long in_cols, long long out_rows, long long out_cols) {
    const long long total = planes * out_rows * out_cols;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long c = k % out_cols;
        const long long r = (k / out_cols) % out_rows;
        const T* plane = in + (k / (out_cols * out_rows)) * in_rows * in_cols;
        T value = T(0);
        for (long long l = 0; l < L; ++l) {
            const long long column = column_sources[c * L + l];
            T blended = T(0);
            for (long long kk = 0; kk < K; ++kk)
                blended += row_weights[r * K + kk] * plane[row_sources[r * K + kk] * in_cols + column];
            value += column_weights[c * L + l] * blended;
        }
        out[k] = value;
    }
}

// Forward: tables of A_h (H' rows, K = 2) and A_w (W' rows, L = 2).
template <typename T>
__global__ void upsample_bilinear_forward(const T* __restrict__ x, const long long* __restrict__ row_sources,
                                          const T* __restrict__ row_weights, long long K,
                                          const long long* __restrict__ column_sources,
                                          const T* __restrict__ column_weights, long long L, T* __restrict__ y,
                                          long long planes, long long H, long long W, long long out_h,
                                          long long out_w) {
    bilinear_gather<T>(x, row_sources, row_weights, K, column_sources, column_weights, L, y, planes, H, W, out_h,
                       out_w);
}

// Backward (a gather, one thread per input element): tables of A_hᵀ (H rows) and A_wᵀ (W rows).
template <typename T>
__global__ void upsample_bilinear_backward(const T* __restrict__ dy, const long long* __restrict__ row_sources,
                                           const T* __restrict__ row_weights, long long K,
                                           const long long* __restrict__ column_sources,
                                           const T* __restrict__ column_weights, long long L, T* __restrict__ dx,
                                           long long planes, long long H, long long W, long long out_h,
                                           long long out_w) {
    bilinear_gather<T>(dy, row_sources, row_weights, K, column_sources, column_weights, L, dx, planes, out_h, out_w,
                       H, W);
}
