"""How tinyseg launches its Numba CUDA kernels ("numba_cuda"): one helper, one error.

The Numba CUDA kernels (tinyseg/functional/*_kernels_numba_cuda.py) are Python twins of
the CUDA C in kernels/: the same algorithms, written with ``@numba.cuda.jit``. They run

* on a GPU, on CuPy arrays (Numba reads them through ``__cuda_array_interface__``,
  no copies), where="numba-cuda" in the launch records;
* without a GPU, in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before
  Numba is first imported), on NumPy arrays: every thread is a Python thread, so it is
  slow but exact, and it runs the kernels' Python source line by line (print() and pdb
  work inside a kernel); where="numba-cuda-simulator".

``numba.cuda`` is imported only here, on the first launch of such a kernel, so that
``import tinyseg`` stays fast and CPU-only machines never touch it. Every launch goes
through ``launch()``, which records it in each active ``backend.cuda_emulation()`` (kernel
name, grid, block, shared-memory bytes), exactly as the CUDA C launch path does.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from . import record

UNUSABLE = ("the 'numba_cuda' kernels need numba.cuda, which cannot run here: use a machine with an "
            "NVIDIA GPU and its driver, or run them in Numba's CUDA simulator by setting "
            "NUMBA_ENABLE_CUDASIM=1 in the environment before Python starts")

_cuda = None


def numba_cuda():
    """The ``numba.cuda`` module, imported on first use; a RuntimeError saying what to do where it cannot run."""
    global _cuda
    if _cuda is None:
        try:
            from numba import cuda
        except ImportError as exc:       # a Numba without its CUDA target
            raise RuntimeError(UNUSABLE) from exc
        if not cuda.is_available():
            raise RuntimeError(UNUSABLE)
        _cuda = cuda
    return _cuda


def simulated() -> bool:
    """Whether numba.cuda is Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) rather than a GPU."""
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def where() -> str:
    return "numba-cuda-simulator" if simulated() else "numba-cuda"


def check_arrays(kernel, *arrays):
    """The arrays a Numba CUDA kernel may take here: NumPy in the simulator, CuPy on a GPU."""
    on_gpu_arrays = backend.get_array_module(*arrays) is not np
    if simulated() and on_gpu_arrays:
        raise TypeError(f"{kernel}: Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs on NumPy arrays, "
                        f"got CuPy arrays: move them to the CPU (tensor.to('cpu')) or unset the simulator")
    if not simulated() and not on_gpu_arrays:
        raise TypeError(f"{kernel}: Numba CUDA kernels run on CuPy arrays on the GPU (tensor.to('cuda')), "
                        f"got NumPy arrays; NumPy arrays run in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")


def launch(name, kernel, grid, block, args, shared_mem=0):
    """Record the launch ``name`` <<<grid, block, shared_mem>>>, then run ``kernel[grid, block](*args)``.

    On a GPU the launch goes on CuPy's current stream, so it is ordered with the CuPy
    operations around it.
    """
    cuda = numba_cuda()
    record(name, grid, block, shared_mem, where())
    stream = 0
    if not simulated():
        current = backend.cupy_module().cuda.get_current_stream().ptr
        if current:
            stream = cuda.external_stream(current)
    kernel[grid, block, stream, int(shared_mem)](*args)
