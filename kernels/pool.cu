// pool.cu — max pooling (keeping each window's winner) and average pooling, forward and backward.
//
//   window (i, j) covers padded rows s_h·i + u and columns s_w·j + v, 0 <= u < k_h, 0 <= v < k_w;
//   H' = ⌊(H + 2p_h − k_h) / s_h⌋ + 1, W' likewise; planes = N·C, every plane (H, W) row-major.
//
//   max_pool2d_forward:     y[p,i,j] = max_{u,v} x_pad[p, s_h·i+u, s_w·j+v]   (x_pad = −∞ outside x)
//                           winner[p,i,j] = u·k_w + v of the first maximum in row-major order
//   max_pool2d_backward:    dx[p,r,q] = Σ g[p,i,j] over the windows (i, j) whose winner is (r, q)
//   avg_pool2d_forward:     y[p,i,j] = (Σ_u Σ_v x_pad[p, s_h·i+u, s_w·j+v]) / (k_h·k_w)   (x_pad = 0 outside)
//   avg_pool2d_backward:    dx[p,r,q] = Σ g[p,i,j] · 1/(k_h·k_w) over the windows (i, j) holding (r, q)
//
// The winner is stored as the smallest unsigned type that holds k_h·k_w − 1, as the CPU
// kernels do (tinyseg/functional/pool.py): uint8 up to 16×16 windows. Hence the max-pool
// kernels' second template parameter, Index: the loader (tinyseg/cuda) builds each for
// unsigned char, unsigned short and unsigned int, and the launcher asks for the winner's
// type (max_pool2d_forward<float, unsigned char> for float32 and windows up to 16×16).
//
// Both backwards are GATHERS: one thread per input element, which finds the few windows
// that contain it (at most ⌈k_h/s_h⌉·⌈k_w/s_w⌉) and adds their contributions in a fixed
// order (i, then j, ascending). Every dx element has exactly one writer, so overlapping
// windows (stride < kernel) need no atomics and the result is the same on every run —
// the scatter "dx[winner] += g" would need atomicAdd, whose order (hence float rounding)
// changes from run to run.
//
// Thread/block mapping (all four): one thread per output element of the kernel (y for the
// forwards, dx for the backwards), linear index k = blockIdx.x·blockDim.x + threadIdx.x
// split as (plane, row, column) with the column fastest, in a grid-stride loop; blocks of
// 256 threads, the grid capped by the launcher (tinyseg/functional/pool_kernels_cuda.py).
//
// Memory access: consecutive threads own consecutive output columns j, so the writes of a
// warp are one coalesced 128-byte (float) transaction. Their reads x[.., s_w·j + v] are
// s_w elements apart: for the U-Net's 2×2 stride-2 pool a warp reads 64 consecutive floats
// per window row (two 128-byte lines) over its two values of v, so every byte fetched is
// used (the second v hits L1). The backward's reads of g and winner are at j ≈ q/s_w: the
// lanes of a warp share them (broadcast), again without waste. No shared memory: a window
// element is read by ⌈k/s⌉² windows at most (1 for non-overlapping pools) and the L1/L2
// caches serve the few re-reads.
//
// Arithmetic intensity (float32, 2×2 stride 2, per output): forward reads 16 B, writes 4 B
// of y and 1 B of winner for 3 comparisons — ~0.14 FLOP/B; backward reads 4 B of g and 1 B
// of winner per input element and writes 4 B of dx for ≤ 1 add — ~0.1 FLOP/B. Average
// pooling: 4 adds + 1 division per 20 B, ~0.25 FLOP/B. The H200's ridge point is
// ~67 TFLOP/s / 4.8 TB/s ≈ 14 FLOP/B, so every kernel here is bound by HBM bandwidth:
// the best possible time is bytes moved / 4.8 TB/s, e.g. the U-Net's first pool (batch 8,
// 64 channels, 256²: 134 MB in, 34 + 8 MB out) ≈ 37 µs.

// Separable max of one window, exactly as the CPU kernels (pool_kernels_numba._window_max):
// along row u the max m_u and its first column v_u (a later column wins only when strictly
// greater), then over rows (a later row wins only when m_u is strictly greater than the
// running max); maxima propagate NaN as np.maximum does. The winners are therefore the
// CPU kernels' also when a window holds NaN or ties.
template <typename T, typename Index>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, Index* __restrict__ winner,
                                   int keep_winner, long long planes, long long H, long long W, long long out_h,
                                   long long out_w, long long kernel_h, long long kernel_w, long long stride_h,
                                   long long stride_w, long long pad_h, long long pad_w, T minus_inf) {
    const long long total = planes * out_h * out_w;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long j = k % out_w;
        const long long i = (k / out_w) % out_h;
        const T* image = x + (k / (out_w * out_h)) * H * W;
        const long long r0 = stride_h * i - pad_h, q0 = stride_w * j - pad_w;
        T best = minus_inf;
        long long best_index = 0;
        for (long long u = 0; u < kernel_h; ++u) {
            const long long r = r0 + u;
            const bool row_inside = r >= 0 && r < H;
            T row_max = (row_inside && q0 >= 0 && q0 < W) ? image[r * W + q0] : minus_inf;
            long long row_winner = 0;
            for (long long v = 1; v < kernel_w; ++v) {
                const long long q = q0 + v;
                if (!row_inside || q < 0 || q >= W) continue;     // −∞ never wins nor makes a NaN
                const T value = image[r * W + q];
                if (value > row_max) row_winner = v;
                if (value > row_max || value != value) row_max = value;
            }
            if (u == 0) {
                best = row_max;
                best_index = row_winner;
            } else {
                if (row_max > best) best_index = u * kernel_w + row_winner;
                if (row_max > best || row_max != row_max) best = row_max;
            }
        }
        y[k] = best;
        if (keep_winner) winner[k] = (Index)best_index;
    }
}

// The windows holding padded position R along one axis: s·i <= R <= s·i + k − 1, i.e.
// i from ⌈(R − k + 1)/s⌉ (at least 0) to ⌊R/s⌋ (at most out − 1). Empty when first > last.
__device__ inline void windows_holding(long long R, long long kernel, long long stride, long long out,
                                       long long* first, long long* last) {
    const long long low = R - kernel + 1;
    *first = low <= 0 ? 0 : (low + stride - 1) / stride;
    *last = R / stride < out - 1 ? R / stride : out - 1;
}

template <typename T, typename Index>
__global__ void max_pool2d_backward(const T* __restrict__ grad, const Index* __restrict__ winner,
                                    T* __restrict__ dx, long long planes, long long H, long long W, long long out_h,
                                    long long out_w, long long kernel_h, long long kernel_w, long long stride_h,
                                    long long stride_w, long long pad_h, long long pad_w) {
    const long long total = planes * H * W;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long q = k % W;
        const long long r = (k / W) % H;
        const long long plane_offset = (k / (W * H)) * out_h * out_w;
        const long long R = r + pad_h, Q = q + pad_w;          // position in the padded plane
        long long i_first, i_last, j_first, j_last;
        windows_holding(R, kernel_h, stride_h, out_h, &i_first, &i_last);
        windows_holding(Q, kernel_w, stride_w, out_w, &j_first, &j_last);
        T total_grad = T(0);
        for (long long i = i_first; i <= i_last; ++i) {
            const long long u = R - stride_h * i;
            for (long long j = j_first; j <= j_last; ++j) {
                const long long o = plane_offset + i * out_w + j;
                if ((long long)winner[o] == u * kernel_w + (Q - stride_w * j)) total_grad += grad[o];
            }
        }
        dx[k] = total_grad;
    }
}

// Average pooling: the forward adds in the CPU kernels' order (Σ_u of the row sums Σ_v),
// padding read as 0, so its results are theirs bit for bit; divisor always k_h·k_w.
template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, long long planes, long long H,
                                   long long W, long long out_h, long long out_w, long long kernel_h,
                                   long long kernel_w, long long stride_h, long long stride_w, long long pad_h,
                                   long long pad_w) {
    const long long total = planes * out_h * out_w;
    const T divisor = T(kernel_h * kernel_w);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long j = k % out_w;
        const long long i = (k / out_w) % out_h;
        const T* image = x + (k / (out_w * out_h)) * H * W;
        const long long r0 = stride_h * i - pad_h, q0 = stride_w * j - pad_w;
        T window_sum = T(0);
        for (long long u = 0; u < kernel_h; ++u) {
            const long long r = r0 + u;
            T row_sum = T(0);
            if (r >= 0 && r < H) {
                for (long long v = 0; v < kernel_w; ++v) {
                    const long long q = q0 + v;
                    if (q >= 0 && q < W) row_sum += image[r * W + q];
                }
            }
            window_sum = u == 0 ? row_sum : window_sum + row_sum;
        }
        y[k] = window_sum / divisor;
    }
}

// Gather: dx[p,r,q] = Σ g[p,i,j]·weight over the windows holding (r, q); weight = 1/(k_h·k_w)
// rounded to T by the caller, each term g·weight as in the CPU kernels.
template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ grad, T* __restrict__ dx, long long planes, long long H,
                                    long long W, long long out_h, long long out_w, long long kernel_h,
                                    long long kernel_w, long long stride_h, long long stride_w, long long pad_h,
                                    long long pad_w, T weight) {
    const long long total = planes * H * W;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long q = k % W;
        const long long r = (k / W) % H;
        const long long plane_offset = (k / (W * H)) * out_h * out_w;
        long long i_first, i_last, j_first, j_last;
        windows_holding(r + pad_h, kernel_h, stride_h, out_h, &i_first, &i_last);
        windows_holding(q + pad_w, kernel_w, stride_w, out_w, &j_first, &j_last);
        T total_grad = T(0);
        for (long long i = i_first; i <= i_last; ++i)
            for (long long j = j_first; j <= j_last; ++j) total_grad += grad[plane_offset + i * out_w + j] * weight;
        dx[k] = total_grad;
    }
}
