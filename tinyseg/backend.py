"""Array modules per device (NumPy on the CPU, CuPy on the GPU) and kernel selection.

Every op takes its array module from its inputs (``xp = get_array_module(x, w)``),
so one body serves NumPy and CuPy, as in Chainer. CuPy is imported only when a CuPy
array is actually seen or a GPU is asked for: ``import tinyseg`` stays fast and works
on machines without CUDA.
"""
from __future__ import annotations

import contextlib

import numpy as np

_cupy = None


def cupy_module():
    """Return the ``cupy`` module, or raise a clear error when it is not usable here."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as exc:
            raise RuntimeError(
                "device 'cuda' needs CuPy: install tinyseg with the gpu extra "
                "(pip install 'tinyseg[gpu]') on a machine with an NVIDIA GPU"
            ) from exc
        _cupy = cupy
    return _cupy


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        return cupy_module().cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(a) -> bool:
    # Checked by type name, so that asking never imports CuPy.
    return type(a).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays):
    """The array module (numpy or cupy) shared by ``arrays``; non-arrays are ignored.

    Mixing NumPy and CuPy arrays is a TypeError here, not a crash inside a kernel.
    """
    if all(type(a) is np.ndarray or not hasattr(a, "shape") for a in arrays):
        return np      # the common case, without the per-array module lookups (called per op)
    kinds = {is_cupy_array(a) for a in arrays if hasattr(a, "shape")}
    if len(kinds) > 1:
        raise TypeError(
            "cannot mix NumPy (cpu) and CuPy (cuda) arrays in one op: "
            "move every input to the same device first, e.g. tensor.to('cuda')"
        )
    return cupy_module() if kinds == {True} else np


def device_of(a) -> str:
    return "cuda" if is_cupy_array(a) else "cpu"


def to_device(a, device: str):
    """Copy array ``a`` to ``device`` ('cpu' or 'cuda'); a no-op when it is already there."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return a.get() if is_cupy_array(a) else np.asarray(a)
    cp = cupy_module()
    return a if is_cupy_array(a) else cp.asarray(a)


# ---------------------------------------------------------------------------------
# Kernel selection: an op may have several implementations on one device (for
# conv2d: NumPy im2col + GEMM, Numba, CUDA). ``use_kernel`` picks one by name; the
# default is the fastest measured one, registered by the op itself.

_kernel_choice: dict[str, str] = {}


def kernel_for(op: str, default: str) -> str:
    return _kernel_choice.get(op, default)


def set_kernel(op: str, name: str | None) -> None:
    """Select kernel ``name`` for ``op`` (None restores the default)."""
    if name is None:
        _kernel_choice.pop(op, None)
    else:
        _kernel_choice[op] = name


@contextlib.contextmanager
def use_kernel(op: str, name: str):
    """``with use_kernel("conv2d", "numba"): ...`` runs the block with that kernel."""
    previous = _kernel_choice.get(op)
    set_kernel(op, name)
    try:
        yield
    finally:
        set_kernel(op, previous)


def set_tuning(flag: bool | None) -> None:
    """Measured kernel choice for "auto" on the CPU: on (the default), off (fixed rules) or None
    (follow the TINYSEG_TUNE environment variable). See tinyseg/tuning.py."""
    from . import tuning
    tuning.set_enabled(flag)


def tuning_enabled() -> bool:
    from . import tuning
    return tuning.enabled()


def cuda_emulation(guard_band=False):
    """Run hand-written CUDA kernels on the CPU: ``with ts.backend.cuda_emulation() as emu: ...``.

    Inside the block, kernels selected as "cuda" / "cuda_v*" (and "numba_cuda" under
    NUMBA_ENABLE_CUDASIM=1) run on NumPy arrays through a host emulation of the CUDA
    execution model: the very same kernels/*.cu source, compiled by g++, launched by the
    same Python code (grid/block sizes, argument packing) that launches them with CuPy on
    a GPU. ``emu.launches`` records every launch (kernel, grid, block, shared-memory
    bytes). With ``guard_band=True`` every array argument sits between margins that a
    launch must leave untouched (tests use it to prove no kernel writes out of bounds).
    How it works and its limits: docs/gpu.md.
    """
    from .cuda import cuda_emulation as emulation
    return emulation(guard_band)
