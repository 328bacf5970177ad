"""A stand-in for CuPy on machines without a GPU: "device" arrays in host memory, CUDA C emulated.

With it, the whole device path of tinyseg — ``Tensor.to("cuda")``, ``Module.to("cuda")``,
optimizers, checkpoints, ``tinyseg train --device cuda``, the "auto" GPU kernel choices
and every "cuda" kernel launched through ``cupy.RawModule`` — runs in the test suite on
any laptop. Use it through the ``gpu_standin`` fixture (tests/cuda/test_device.py), which
puts it where ``tinyseg.backend`` looks for CuPy; a real CuPy is never replaced.

What it models of CuPy: a separate array type (``cupy.ndarray``, whose module is
"cupy", so tinyseg sees it as a device array); copies on the way to and from the device
(``asarray`` copies host arrays, ``.get()`` / ``asnumpy`` return host copies); the array
functions of the ``cupy`` namespace (NumPy's, returning device arrays); ``RawModule``
(the kernels/*.cu source built for the host emulation instead of by NVRTC); and CuPy's
refusal to mix host and device arrays in one operation. What it cannot model: speed,
device memory, streams (events time host execution), and a NumPy function applied to a
device array directly (NumPy accepts the stand-in where CuPy would refuse).
"""
from __future__ import annotations

import hashlib
import tempfile
import time
import types
from pathlib import Path

import numpy as np


class ndarray(np.ndarray):
    """A "device" array: host memory, a type of its own."""

    def get(self):
        return np.array(self.view(np.ndarray), copy=True)

    @property
    def device(self):
        return _Device()

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for value in inputs + tuple(kwargs.get("out", ())):
            if type(value) is np.ndarray and value.ndim > 0:
                raise TypeError(f"Unsupported type <class 'numpy.ndarray'> (CuPy stand-in: {ufunc.__name__} "
                                f"mixes a host array with a device array)")
        host = [v.view(np.ndarray) if isinstance(v, ndarray) else v for v in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, ndarray) else o for o in kwargs["out"])
        return _to_device_result(getattr(ufunc, method)(*host, **kwargs))


ndarray.__module__ = "cupy"


def _to_device_result(value):
    if type(value) is np.ndarray:
        return value.view(ndarray)
    if isinstance(value, np.generic):
        return np.asarray(value).view(ndarray)       # CuPy reductions give 0-d device arrays
    if isinstance(value, tuple):
        return tuple(_to_device_result(v) for v in value)
    if isinstance(value, list):
        return [_to_device_result(v) for v in value]
    return value


def _to_host_argument(value):
    if isinstance(value, ndarray):
        return value.view(np.ndarray)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host_argument(v) for v in value)
    return value


def _device_function(function):
    def call(*args, **kwargs):
        for value in list(args) + list(kwargs.values()):
            if type(value) is np.ndarray and value.ndim > 0 and function.__name__ not in ("asarray", "array"):
                raise TypeError(f"Unsupported type <class 'numpy.ndarray'> (CuPy stand-in: cupy.{function.__name__} "
                                f"got a host array)")
        args = [_to_host_argument(a) for a in args]
        kwargs = {k: _to_host_argument(v) for k, v in kwargs.items()}
        return _to_device_result(function(*args, **kwargs))
    call.__name__ = function.__name__
    return call


class _Device:
    id = 0

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    """Times host execution (there is no device to time)."""

    def __init__(self, *args, **kwargs):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_time(start, end):
    return (end.time - start.time) * 1000.0


class RawModule:
    """The kernels of ``code`` built for the host emulation (CuPy would compile them with NVRTC)."""

    def __init__(self, code, options=(), name_expressions=()):
        from tinyseg.cuda.emulation import EmulatedModule

        includes = [o[2:] for o in options if o.startswith("-I")]
        folder = Path(tempfile.gettempdir()) / "tinyseg-gpu-standin"
        folder.mkdir(exist_ok=True)
        source = folder / f"module-{hashlib.sha256(code.encode()).hexdigest()[:16]}.cu"
        source.write_text(code)
        self._module = EmulatedModule(source, name_expressions, include_dirs=includes)

    def get_function(self, name):
        return self._module.get_function(name)


def build():
    """A fresh ``cupy``-like module object."""
    cupy = types.ModuleType("cupy")
    cupy.__doc__ = __doc__
    cupy.ndarray = ndarray
    cupy.RawModule = RawModule

    def asarray(a, dtype=None, order=None):
        if isinstance(a, ndarray) and (dtype is None or a.dtype == dtype):
            return a
        return np.array(_to_host_argument(a), dtype=dtype, copy=True, order=order or "K").view(ndarray)

    def ascontiguousarray(a, dtype=None):
        return np.ascontiguousarray(_to_host_argument(a), dtype=dtype).view(ndarray)

    def asnumpy(a):
        return a.get() if isinstance(a, ndarray) else np.asarray(a)

    cupy.asarray = asarray
    cupy.array = lambda a, dtype=None, copy=True: asarray(np.array(_to_host_argument(a), dtype=dtype, copy=True))
    cupy.ascontiguousarray = ascontiguousarray
    cupy.asnumpy = asnumpy
    cupy.get_array_module = lambda *arrays: cupy
    cupy.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                      getDeviceProperties=lambda i: {"name": b"CuPy stand-in (host emulation)"}),
        Device=lambda i=0: _Device(),
        Event=_Event,
        get_elapsed_time=_elapsed_time,
        Stream=types.SimpleNamespace(null=types.SimpleNamespace(synchronize=lambda: None)),
    )
    cupy.random = types.SimpleNamespace(seed=lambda s=None: None)

    def __getattr__(name):
        value = getattr(np, name)
        if callable(value) and not isinstance(value, type):
            wrapped = _device_function(value)
            setattr(cupy, name, wrapped)
            return wrapped
        return value

    cupy.__getattr__ = __getattr__
    return cupy
