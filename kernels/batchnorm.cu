// batchnorm.cu — batch normalisation: the per-channel reductions of the forward (mean,
// biased variance) and of the backward (Σ dy, Σ dy·x̂), and the two elementwise passes.
//
//   x (N, C, S), S = H·W (1 for (N, C) input), m = N·S values per channel c:
//   μ_c  = (1/m) Σ_{n,s} x[n,c,s]
//   σ²_c = (1/m) Σ_{n,s} (x[n,c,s] − μ_c)²          two passes: no E[x²] − μ² cancellation
//   y    = (x − μ_c) · scale_c + shift_c              scale = γ/√(σ² + eps), shift = β
//   backward sums:  Σ_g_c = Σ dy[n,c,s],   Σ_gx̂_c = Σ dy[n,c,s] · (x[n,c,s] − μ_c) · inv_std_c
//   dx   = (dy − x̂ · Σ_gx̂_c/m − Σ_g_c/m) · scale_c   (training; evaluation: dx = dy · scale_c)
//
// DETERMINISTIC REDUCTIONS, as in loss.cu: a grid (B, C) of blocks of b threads (b = 256, or
// the smallest power of two covering m when m < 256), blockIdx.y the channel; each thread
// adds the channel's values k = blockIdx.x·b + threadIdx.x, k + B·b, ... (k indexing the
// m values in (n, s) order), then the block adds its b sums by a fixed tree in shared
// memory and writes partials[row, blockIdx.x]; then
// channel_sums_finish (one block per row) adds the B partials of each row in a fixed
// order. B and b depend only on the shape (tinyseg/functional/norm_kernels_cuda.py), so a shape
// is always summed in the same order, with no atomics.
//
// Memory access: value k of channel c is x[(n·C + c)·S + s] with n = k / S, s = k mod S:
// consecutive threads read consecutive s, a coalesced row of the channel's plane (one
// break per warp where s wraps to the next image). The tree reads sums[t], sums[t + stride]:
// consecutive words, no bank conflicts. The elementwise kernels are one thread per element
// in a grid-stride loop, coalesced, with the per-channel scalars (C values) from L1/L2.
//
// Arithmetic intensity (float32): each reduction pass reads 4 B (forward) or 8 B (backward:
// dy and x) per value for 1–4 FLOP — 0.25–0.5 FLOP/B; the elementwise passes ~2–5 FLOP per
// 8–12 B. The H200's ridge point is ~67 TFLOP/s / 4.8 TB/s ≈ 14 FLOP/B: all bandwidth-bound.
// A training forward reads x three times (mean, variance, normalise) and writes y once;
// the backward reads dy, x twice each and writes dx: e.g. the U-Net's first layer (batch 8,
// 64 channels, 256², 134 MB per tensor) ≈ 4·134 MB / 4.8 TB/s ≈ 0.11 ms forward, ≈ 0.14 ms
// backward at best. (A one-pass Welford forward would save one read of x; the two-pass
// form is kept because it is exact and is what the CPU kernel computes.)

#define TINYSEG_REDUCE_THREADS 256

// Adds sums[0 .. blockDim.x − 1] in place by a fixed tree (blockDim.x a power of two, at
// most TINYSEG_REDUCE_THREADS); every thread of the block must call it.
template <typename T>
__device__ T block_tree_sum(T* sums) {
    for (int stride = (int)blockDim.x / 2; stride > 0; stride /= 2) {
        __syncthreads();
        if ((int)threadIdx.x < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    }
    __syncthreads();
    return sums[0];
}

// partials[c, b] = Σ x[n, c, s] over block b's share of channel c (grid (B, C)).
template <typename T>
__global__ void channel_sum_partials(const T* __restrict__ x, long long batch, long long channels, long long pixels,
                                     T* __restrict__ partials) {
    __shared__ T sums[TINYSEG_REDUCE_THREADS];
    const long long c = blockIdx.y, m = batch * pixels;
    T sum = T(0);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < m; k += (long long)gridDim.x * blockDim.x)
        sum += x[((k / pixels) * channels + c) * pixels + k % pixels];
    sums[threadIdx.x] = sum;
    const T total = block_tree_sum(sums);
    if (threadIdx.x == 0) partials[c * gridDim.x + blockIdx.x] = total;
}

// partials[c, b] = Σ (x[n, c, s] − mean[c])² over block b's share of channel c.
template <typename T>
__global__ void channel_centred_square_partials(const T* __restrict__ x, const T* __restrict__ mean, long long batch,
                                                long long channels, long long pixels, T* __restrict__ partials) {
    __shared__ T sums[TINYSEG_REDUCE_THREADS];
    const long long c = blockIdx.y, m = batch * pixels;
    const T mu = mean[c];
    T sum = T(0);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < m; k += (long long)gridDim.x * blockDim.x) {
        const T centred = x[((k / pixels) * channels + c) * pixels + k % pixels] - mu;
        sum += centred * centred;
    }
    sums[threadIdx.x] = sum;
    const T total = block_tree_sum(sums);
    if (threadIdx.x == 0) partials[c * gridDim.x + blockIdx.x] = total;
}

// partials[c, b] = Σ dy and partials[C + c, b] = Σ dy · x̂ over block b's share of channel c.
template <typename T>
__global__ void batch_norm_backward_partials(const T* __restrict__ dy, const T* __restrict__ x,
                                             const T* __restrict__ mean, const T* __restrict__ inv_std,
                                             long long batch, long long channels, long long pixels,
                                             T* __restrict__ partials) {
    __shared__ T sums[2][TINYSEG_REDUCE_THREADS];
    const long long c = blockIdx.y, m = batch * pixels;
    const T mu = mean[c], inv = inv_std[c];
    T sum_g = T(0), sum_g_xhat = T(0);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < m; k += (long long)gridDim.x * blockDim.x) {
        const long long index = ((k / pixels) * channels + c) * pixels + k % pixels;
        const T g = dy[index];
        sum_g += g;
        sum_g_xhat += g * ((x[index] - mu) * inv);
    }
    sums[0][threadIdx.x] = sum_g;
    sums[1][threadIdx.x] = sum_g_xhat;
    const T total_g = block_tree_sum(sums[0]);
    const T total_g_xhat = block_tree_sum(sums[1]);
    if (threadIdx.x == 0) {
        partials[c * gridDim.x + blockIdx.x] = total_g;
        partials[(channels + c) * gridDim.x + blockIdx.x] = total_g_xhat;
    }
}

// out[row] = (Σ_b partials[row, b]) / divisor, one block per row, in a fixed order.
template <typename T>
__global__ void channel_sums_finish(const T* __restrict__ partials, long long row_length, T divisor,
                                    T* __restrict__ out) {
    __shared__ T sums[TINYSEG_REDUCE_THREADS];
    const T* row = partials + blockIdx.x * row_length;
    T sum = T(0);
    for (long long b = threadIdx.x; b < row_length; b += blockDim.x) sum += row[b];
    sums[threadIdx.x] = sum;
    const T total = block_tree_sum(sums);
    if (threadIdx.x == 0) out[blockIdx.x] = total / divisor;
}

// y = (x − mean[c]) · scale[c] (+ shift[c] when has_shift), one thread per element.
template <typename T>
__global__ void batch_norm_forward_apply(const T* __restrict__ x, const T* __restrict__ mean,
                                         const T* __restrict__ scale, const T* __restrict__ shift, int has_shift,
                                         long long channels, long long pixels, long long n, T* __restrict__ y) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const long long c = (k / pixels) % channels;
        const T value = (x[k] - mean[c]) * scale[c];
        y[k] = has_shift ? value + shift[c] : value;
    }
}

// dx, one thread per element. Training: (dy − x̂·Σ_gx̂/m − Σ_g/m)·scale, in the CPU kernel's
// order of operations; evaluation (training = 0): dy·scale.
template <typename T>
__global__ void batch_norm_backward_dx(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ mean,
                                       const T* __restrict__ inv_std, const T* __restrict__ scale,
                                       const T* __restrict__ sum_g, const T* __restrict__ sum_g_xhat, T count,
                                       int training, long long channels, long long pixels, long long n,
                                       T* __restrict__ dx) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const long long c = (k / pixels) % channels;
        if (!training) {
            dx[k] = dy[k] * scale[c];
            continue;
        }
        const T x_hat = (x[k] - mean[c]) * inv_std[c];
        T value = dy[k] - x_hat * (sum_g_xhat[c] / count);
        value -= sum_g[c] / count;
        dx[k] = value * scale[c];
    }
}
