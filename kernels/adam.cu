// adam.cu — the Adam / AdamW update, in place, one thread per parameter element.
//
//   Adam  (L2 decay, l2_decay = 1):      g ← g + wd · p
//   AdamW (decoupled, decoupled = 1):    p ← p · (1 − lr · wd)
//   m ← β1·m + (1 − β1)·g                written g + β1·(m − g), as the CPU kernels
//   v ← β2·v + (1 − β2)·g²
//   p ← p − step_size · m / (√v / √(1 − β2^t) + eps),   step_size = lr / (1 − β1^t)
//
// The per-step scalars (step_size, √(1 − β2^t), 1 − lr·wd, 1 − β2) are computed once on
// the host in double precision and passed already rounded to T, exactly as the NumPy
// and Numba kernels of tinyseg/optim.py receive them; the bias correction is therefore
// the CPU's. The operations per element are the Numba kernel's, in its order. (nvcc and
// NVRTC contract a·b + c into fused multiply-adds by default, so on a GPU the result
// equals the CPU's to rounding — a few ulps — not bit for bit; the host emulation, built
// by g++ without -ffast-math, matches the CPU kernels exactly.)
//
// Thread/block mapping: one thread per element k of the flat parameter, blocks of 256,
// grid-stride loop with the grid capped by the launcher (tinyseg/optim_kernels_cuda.py).
// Each parameter tensor is one launch.
//
// Memory access: p, g, m, v read and p, m, v written at index k — consecutive threads,
// consecutive words: every access fully coalesced. No shared memory (nothing is reused).
//
// Arithmetic intensity (float32): ~12 FLOP (a square root, a division, a few mul/add) per
// 28 bytes moved (4 reads + 3 writes of 4 B) ≈ 0.43 FLOP/B; the H200's ridge point is
// ~67 TFLOP/s / 4.8 TB/s ≈ 14 FLOP/B, so the update is bandwidth-bound: 28 B per
// parameter, e.g. the 31 M-parameter U-Net (base 64) ≈ 0.87 GB ≈ 0.18 ms per step at best.
// The NumPy-expression path makes ~10 passes over parameter-sized arrays (~3× the bytes);
// this kernel moves each byte once.

template <typename T>
__global__ void adam_update(T* __restrict__ param, const T* __restrict__ grad, T* __restrict__ m, T* __restrict__ v,
                            long long n, int l2_decay, T weight_decay, int decoupled_decay, T decay_factor, T beta1,
                            T one_minus_beta2, T beta2, T bias_correction2_sqrt, T eps, T step_size) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        T p = param[k];
        T g = grad[k];
        if (decoupled_decay) {
            p = p * decay_factor;                          // p ← p · (1 − lr · wd)
        } else if (l2_decay) {
            g = p * weight_decay + g;                      // g ← g + wd · p
        }
        const T mk = (m[k] - g) * beta1 + g;               // m ← β1·m + (1 − β1)·g
        const T vk = v[k] * beta2 + (g * g) * one_minus_beta2;
        const T denominator = sqrt(vk) / bias_correction2_sqrt + eps;
        m[k] = mk;
        v[k] = vk;
        param[k] = p - (mk / denominator) * step_size;
    }
}
