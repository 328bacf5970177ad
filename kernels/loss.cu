// loss.cu — binary cross-entropy with logits and the soft Dice loss: forward partial sums,
// a deterministic final reduction, and the backwards.
//
//   BCE:  loss = (1/n) Σ_k w_k · [pw_k · t_k · softplus(−z_k) + (1 − t_k) · softplus(z_k)]
//         dz_k = g · w_k · ((1 − t_k)·σ(z_k) − pw_k·t_k·σ(−z_k)) / n
//         dt_k = g · w_k · (pw_k·softplus(−z_k) − softplus(z_k)) / n
//         softplus(±z) = max(±z, 0) + log1p(exp(−|z|)): exp never sees a positive argument.
//   Dice: per class c, over the batch and every pixel, with p = σ(z) (1 channel) or
//         softmax over the channels (C > 1) and t_c the one-hot target:
//         I_c = Σ p_c·t_c,  P_c = Σ p_c,  T_c = Σ t_c,  D_c = (2 I_c + s) / (P_c + T_c + s)
//         loss = 1 − mean_c D_c  (the last line on the host, from the 3·C sums)
//         dL/dp_c = −g · (2 t_c − D_c) / (C · (P_c + T_c + s)), then through σ or softmax.
//
// DETERMINISTIC REDUCTIONS. A sum over millions of elements is done in two launches with a
// fixed order, never with atomicAdd (whose order, hence float rounding, changes per run):
//   1. *_partial_sums: each thread adds its elements (a grid-stride loop: element k goes to
//      thread k mod (gridDim.x·blockDim.x), in increasing k), then the block adds its
//      thread sums by a tree in shared memory (stride blockDim/2, ..., 2, 1: a fixed
//      pairing); thread 0 writes the block's partial sum.
//   2. sum_rows: one block per row of partial sums adds them the same way (each thread a
//      fixed strided subset, then the tree) and writes row total / divisor.
// Reduction blocks have a power-of-two size, 256 threads, or fewer for small inputs (the
// smallest power of two covering them: a 3-partial row is summed by 4 threads, not 256).
// Grid and block sizes are functions of the size only (tinyseg/functional/
// loss_kernels_cuda.py), so a given shape is summed in the same order on every run:
// bit-identical results.
//
// Thread/block mapping: elementwise kernels (bce backward, dice_probabilities,
// dice_backward) one thread per element or per pixel (n, s), blocks of 256, grid-stride;
// partial sums: blocks of ≤ 256, grid (B) for BCE, (B, C) for Dice — blockIdx.y is the class.
//
// Memory access: consecutive threads read consecutive elements (coalesced); Dice reads a
// pixel's C logits at stride S = H·W (each a coalesced row across the warp). Shared
// memory: the tree reads sums[t] and sums[t + stride], consecutive words across a warp:
// no bank conflicts (for double, 8-byte words over 32 banks: two wavefronts, the hardware
// minimum). The tree's last steps leave most threads idle; at 256 values per block that
// costs a few hundred cycles, nothing against the grid-stride loop that precedes it.
//
// Arithmetic intensity: BCE forward ~20 FLOP (exp, log1p, a handful of mul/add) per 8 B
// read (z, t in float32) ≈ 2.5 FLOP/B; backward ~15 FLOP per 12 B ≈ 1.2 FLOP/B; Dice
// per pixel and class ~10 FLOP per ~16 B. All below the H200's ridge point (~67 TFLOP/s /
// 4.8 TB/s ≈ 14 FLOP/B): bandwidth-bound, though exp/log1p run on the SFUs at 1/4 rate, so
// BCE forward sits nearer the compute roof than anything else in tinyseg's elementwise
// kernels. E.g. BCE over a batch of 8 masks 256² (0.5 M elements, 4 MB) ≈ 1 µs of HBM
// time: at that size the launches (~3 µs each) dominate.

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

template <typename T>
__device__ inline T softplus(T z) {   // log(1 + exp(z)) without overflow
    return (z > T(0) ? z : T(0)) + log1p(exp(-fabs(z)));
}

// Per block: Σ over its grid-stride elements of the BCE terms (weights read only when given).
template <typename T>
__global__ void bce_with_logits_partial_sums(const T* __restrict__ z, const T* __restrict__ t,
                                             const T* __restrict__ weight, const T* __restrict__ pos_weight,
                                             int has_weight, int has_pos_weight, long long n,
                                             T* __restrict__ partials) {
    __shared__ T sums[TINYSEG_REDUCE_THREADS];
    T sum = T(0);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const T zk = z[k], tk = t[k];
        const T positive = has_pos_weight ? (pos_weight[k] * tk) * softplus(-zk) : tk * softplus(-zk);
        T term = positive + (T(1) - tk) * softplus(zk);
        if (has_weight) term *= weight[k];
        sum += term;
    }
    sums[threadIdx.x] = sum;
    const T total = block_tree_sum(sums);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out[row] = (Σ_b partials[row, b]) / divisor, one block per row, in a fixed order.
template <typename T>
__global__ void sum_rows(const T* __restrict__ partials, long long row_length, T divisor, T* __restrict__ out) {
    __shared__ T sums[TINYSEG_REDUCE_THREADS];
    const T* row = partials + blockIdx.x * row_length;
    T sum = T(0);
    for (long long b = threadIdx.x; b < row_length; b += blockDim.x) sum += row[b];
    sums[threadIdx.x] = sum;
    const T total = block_tree_sum(sums);
    if (threadIdx.x == 0) out[blockIdx.x] = total / divisor;
}

// dz and dt of BCE (each written only when asked for); g is the upstream gradient (1 element).
template <typename T>
__global__ void bce_with_logits_backward(const T* __restrict__ g, const T* __restrict__ z, const T* __restrict__ t,
                                         const T* __restrict__ weight, const T* __restrict__ pos_weight,
                                         int has_weight, int has_pos_weight, int needs_dz, int needs_dt, long long n,
                                         T* __restrict__ dz, T* __restrict__ dt) {
    const T scale = g[0] / T(n);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        const T zk = z[k], tk = t[k];
        const T coefficient = has_weight ? scale * weight[k] : scale;
        const T pw = has_pos_weight ? pos_weight[k] : T(1);
        if (needs_dz) {
            // σ(z) and σ(−z) from e = exp(−|z|), neither as 1 − the other (no cancellation).
            const T e = exp(-fabs(zk));
            const T one_plus_e = T(1) + e;
            const T sigma = (zk >= T(0) ? T(1) : e) / one_plus_e;
            const T sigma_negative = (zk >= T(0) ? e : T(1)) / one_plus_e;
            const T weighted_t = has_pos_weight ? pw * tk : tk;
            dz[k] = ((T(1) - tk) * sigma - weighted_t * sigma_negative) * coefficient;
        }
        if (needs_dt) {
            const T pw_softplus_negative = has_pos_weight ? pw * softplus(-zk) : softplus(-zk);
            dt[k] = (pw_softplus_negative - softplus(zk)) * coefficient;
        }
    }
}

// p[n, c, s]: σ(z) for one channel, softmax over c for C > 1 (exp of the log-softmax
// z − M − log Σ exp(z − M), M the pixel's max, as the CPU). One thread per pixel (n, s).
template <typename T>
__global__ void dice_probabilities(const T* __restrict__ z, T* __restrict__ p, long long batch, long long classes,
                                   long long pixels) {
    const long long total = batch * pixels;
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long first = (k / pixels) * classes * pixels + k % pixels;   // z[n, 0, s]
        if (classes == 1) {
            const T zk = z[first];
            const T e = exp(-fabs(zk));
            p[first] = zk >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
            continue;
        }
        T largest = z[first];
        for (long long c = 1; c < classes; ++c) largest = z[first + c * pixels] > largest ? z[first + c * pixels] : largest;
        T exp_sum = T(0);
        for (long long c = 0; c < classes; ++c) exp_sum += exp(z[first + c * pixels] - largest);
        const T log_sum = log(exp_sum);
        for (long long c = 0; c < classes; ++c) p[first + c * pixels] = exp((z[first + c * pixels] - largest) - log_sum);
    }
}

// partials[(kind·C + c)·B + b], kind 0: Σ p_c·t_c, 1: Σ p_c, 2: Σ t_c, over block b's pixels.
// labels[n, s] is the class of pixel (n, s); with one channel it is the 0/1 mask and the
// channel stands for class 1.
template <typename T>
__global__ void dice_partial_sums(const T* __restrict__ p, const long long* __restrict__ labels, long long batch,
                                  long long classes, long long pixels, T* __restrict__ partials) {
    __shared__ T sums[3][TINYSEG_REDUCE_THREADS];
    const long long c = blockIdx.y;
    const long long class_value = classes == 1 ? 1 : c;
    const long long total = batch * pixels;
    T intersection = T(0), predicted = T(0), true_count = T(0);
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const T pk = p[((k / pixels) * classes + c) * pixels + k % pixels];
        const T tk = labels[k] == class_value ? T(1) : T(0);
        intersection += pk * tk;
        predicted += pk;
        true_count += tk;
    }
    sums[0][threadIdx.x] = intersection;
    sums[1][threadIdx.x] = predicted;
    sums[2][threadIdx.x] = true_count;
    for (int kind = 0; kind < 3; ++kind) {
        const T block_total = block_tree_sum(sums[kind]);
        if (threadIdx.x == 0) partials[(kind * classes + c) * gridDim.x + blockIdx.x] = block_total;
    }
}

// dz[n, c, s] from p, the labels, D_c and the denominators P_c + T_c + s (C values each);
// g is the upstream gradient (1 element). One thread per pixel (n, s).
template <typename T>
__global__ void dice_backward(const T* __restrict__ g, const T* __restrict__ z, const T* __restrict__ p,
                              const long long* __restrict__ labels, const T* __restrict__ dice,
                              const T* __restrict__ denominator, long long batch, long long classes,
                              long long pixels, T* __restrict__ dz) {
    const long long total = batch * pixels;
    const T minus_g = -g[0];
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < total;
         k += (long long)gridDim.x * blockDim.x) {
        const long long first = (k / pixels) * classes * pixels + k % pixels;
        if (classes == 1) {
            const T tk = labels[k] == 1 ? T(1) : T(0);
            const T dl_dp = (T(2) * tk - dice[0]) * (minus_g / denominator[0]);
            const T e = exp(-fabs(z[first]));                   // σ'(z) = e / (1 + e)², e = exp(−|z|)
            dz[first] = e / ((T(1) + e) * (T(1) + e)) * dl_dp;
            continue;
        }
        // Softmax backward: dz_c = p_c · (q_c − Σ_k q_k p_k), q = dL/dp.
        T q_dot_p = T(0);
        for (long long c = 0; c < classes; ++c) {
            const T tc = labels[k] == c ? T(1) : T(0);
            const T q = (T(2) * tc - dice[c]) * (minus_g / (T(classes) * denominator[c]));
            q_dot_p += q * p[first + c * pixels];
        }
        for (long long c = 0; c < classes; ++c) {
            const T tc = labels[k] == c ? T(1) : T(0);
            const T q = (T(2) * tc - dice[c]) * (minus_g / (T(classes) * denominator[c]));
            dz[first + c * pixels] = p[first + c * pixels] * (q - q_dot_p);
        }
    }
}
