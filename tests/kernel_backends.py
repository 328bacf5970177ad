"""Run one op test on every kernel of the op, wherever that kernel runs.

    @pytest.mark.parametrize("kernel", kernel_names(RELU_KERNELS))
    def test_relu(kernel):
        with on_kernel("relu", kernel) as k:
            y = F.relu(ts.Tensor(k.put(x)))
            np.testing.assert_array_equal(k.get(y.data), expected)

CPU kernels ("numpy", "numba", "auto", ...) run on NumPy arrays. GPU kernels ("cuda",
"cuda_v*", "numba_cuda") run on CuPy arrays when a GPU is present, otherwise on NumPy
arrays inside ``backend.cuda_emulation()`` (the CUDA C through the host emulation,
Numba CUDA through Numba's simulator, set up in conftest.py). "cupy" needs a GPU and is
skipped without one. So the identical test runs on a laptop and on a GPU.
"""
import contextlib
import os
import shutil

import numpy as np
import pytest

from tinyseg import backend

GPU_KINDS = ("cuda", "numba_cuda")


def is_gpu_kernel(name: str) -> bool:
    return name == "cupy" or name.startswith(GPU_KINDS)


def gpu_present() -> bool:
    return os.path.exists("/dev/nvidia0") and backend.gpu_available()


def kernel_names(registry) -> list:
    """Every kernel name of an op's registry, as pytest params (GPU-only ones marked to skip without a GPU)."""
    params = []
    for name in sorted(registry):
        marks = []
        if name == "cupy" and not gpu_present():
            marks.append(pytest.mark.skip(reason="the 'cupy' kernel needs CuPy and a GPU"))
        if name.startswith("cuda") and not gpu_present() and not shutil.which(os.environ.get("CXX", "g++")):
            marks.append(pytest.mark.skip(reason="the CUDA emulation needs g++"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


class _Runner:
    def __init__(self, on_gpu, emulation=None):
        self.on_gpu, self.emulation = on_gpu, emulation

    def put(self, a):
        """``a`` on the kernel's device (NumPy arrays pass through on the CPU and in emulation)."""
        if a is None or not isinstance(a, np.ndarray):
            return a
        return backend.to_device(a, "cuda") if self.on_gpu else a

    def get(self, a):
        """``a`` as a NumPy array."""
        return None if a is None else backend.to_device(a, "cpu")


@contextlib.contextmanager
def on_kernel(op, name, guard_band=True):
    """Select kernel ``name`` for ``op`` and yield a runner that puts arrays where it runs.

    Emulated launches run with guard bands by default (any write outside an array fails).
    """
    with backend.use_kernel(op, name):
        if not is_gpu_kernel(name):
            yield _Runner(False)
        elif gpu_present():
            with backend.cuda_emulation() as records:      # on a GPU: records only
                yield _Runner(True, records)
        else:
            with backend.cuda_emulation(guard_band=guard_band) as emulation:
                yield _Runner(False, emulation)

