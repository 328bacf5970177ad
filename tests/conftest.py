"""Settings every test session needs before any test module imports Numba."""
import os

# Without an NVIDIA GPU, Numba's CUDA kernels ("numba_cuda") run in Numba's CUDA simulator,
# which Numba reads from the environment when it is first imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
