// activation.cu — ReLU forward and backward, and the fused bias + ReLU of a conv layer.
//
//   relu_forward:       y[k]  = max(x[k], 0)
//   relu_backward:      dx[k] = dy[k] if y[k] > 0 else 0          (0 at x = 0, as PyTorch)
//   bias_relu_forward:  y[n,c,p] = max(z[n,c,p] + b[c], 0)     for z (N, C, P), P = H·W
//
// Thread/block mapping: one thread per element, k = blockIdx.x · blockDim.x +
// threadIdx.x, in a grid-stride loop (k += gridDim.x · blockDim.x) so that any size runs
// on a grid capped by the launcher. Blocks of 256 threads (8 warps).
//
// Memory access: consecutive threads read and write consecutive elements, so each warp
// touches 32 consecutive 4-byte (or 8-byte) words — fully coalesced 128-byte (256-byte)
// transactions. No shared memory, no reuse.
//
// Arithmetic intensity: 1 comparison per 8 bytes moved (float32: read 4, write 4), i.e.
// ~0.125 FLOP/byte: far left of any GPU's ridge point (H200: ~67 TFLOP/s FP32 /
// 4.8 TB/s ≈ 14 FLOP/byte), so these kernels are bound by memory bandwidth; the best they
// can do is move each byte once. That is why the bias add is fused into the ReLU: done
// apart, z + b would be written and read back once more (3 passes over the tensor instead
// of 2).

template <typename T>
__global__ void relu_forward(const T* __restrict__ x, T* __restrict__ y, long long n) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        T v = x[k];
        // v > 0 ? v : 0 keeps NaN as NaN only through the comparison: NaN > 0 is false,
        // so NaN becomes 0 here — while max(NaN, 0) in NumPy is NaN. Keep NumPy's answer:
        y[k] = (v > T(0) || v != v) ? v : T(0);
    }
}

template <typename T>
__global__ void relu_backward(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                              long long n) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        dx[k] = y[k] > T(0) ? dy[k] : dy[k] * T(0);   // dy·0, not 0: NaN/inf in dy stay NaN, as dy·mask
    }
}

template <typename T>
__global__ void bias_relu_forward(const T* __restrict__ z, const T* __restrict__ b, T* __restrict__ y,
                                  long long channels, long long plane, long long n) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n;
         k += (long long)gridDim.x * blockDim.x) {
        T v = z[k] + b[(k / plane) % channels];
        y[k] = (v > T(0) || v != v) ? v : T(0);
    }
}
