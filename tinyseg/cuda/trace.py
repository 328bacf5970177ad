"""Which thread wrote each output element: a CUDA kernel replayed in the emulation with a traced element type.

How work maps to threads is the first thing to understand about a GPU kernel, and the
easiest to get wrong. This module shows it for tinyseg's real kernels, unchanged:

    calls = record_launches(lambda: F.conv2d(x, w, padding=1))     # with use_kernel(...)
    owners = thread_owners(calls[0])      # {argument position: owner array of that argument}
    owners[2]                             # y's shape; the global thread index that wrote each y

``record_launches`` runs a function inside ``cuda_emulation()`` and keeps every
``tinyseg.cuda.launch`` call with its arguments (the launch records of ``emu.launches``
keep only the kernel, grid, block and shared memory). ``thread_owners`` replays one call
with the same grid, block, shared memory and (copied) arguments through a second host
build of the same .cu source, instantiated for ``T = Traced``: a float whose assignment
operators note, for every element of a watched array they write, the thread that wrote
it (the emulation runs one thread at a time, so "the current thread" is well defined).
Kernels are templates on T, so nothing in them changes (a kernel also templated on an
index type keeps the launch's: ``max_pool2d_forward<Traced, unsigned char>``); the values
computed are the float32 ones. docs/img/gen_gpu_pictures.py draws the owner maps of
docs/gpu.md with it.

Limits: float32 kernels only (Traced is 4 bytes); a kernel that reinterprets its T
pointers as other types (vector loads), or calls a math function with no Traced
overload, does not compile this way; only assignments (=, +=, -=, *=, /=) count as
writes, so an atomicAdd into an output is not traced.
"""
from __future__ import annotations

import contextlib
import ctypes
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import kernels_dir, name_expression, template_instances

TRACED_PRELUDE = r"""
// ----- tinyseg.cuda.trace: T = Traced, a float that notes which thread writes where
#include <vector>
namespace ts_trace {
struct Region { const char* begin; const char* end; long long* owner; };
inline std::vector<Region> regions;
inline void wrote(const void* address) {
    const char* p = static_cast<const char*>(address);
    for (const Region& r : regions) {
        if (p < r.begin || p >= r.end) continue;
        long long block = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
        long long thread = threadIdx.x + (long long)blockDim.x * (threadIdx.y + (long long)blockDim.y * threadIdx.z);
        r.owner[(p - r.begin) / 4] = block * ((long long)blockDim.x * blockDim.y * blockDim.z) + thread;
    }
}
}  // namespace ts_trace
extern "C" void ts_trace_clear() { ts_trace::regions.clear(); }
extern "C" void ts_trace_watch(void* begin, long long bytes, long long* owner) {
    ts_trace::regions.push_back({static_cast<const char*>(begin), static_cast<const char*>(begin) + bytes, owner});
}
struct Traced {
    float v;
    Traced() = default;
    Traced(double x) : v(float(x)) {}
    Traced(const Traced&) = default;
    Traced& operator=(const Traced& o) { v = o.v; ts_trace::wrote(this); return *this; }
    Traced& operator+=(const Traced& o) { v += o.v; ts_trace::wrote(this); return *this; }
    Traced& operator-=(const Traced& o) { v -= o.v; ts_trace::wrote(this); return *this; }
    Traced& operator*=(const Traced& o) { v *= o.v; ts_trace::wrote(this); return *this; }
    Traced& operator/=(const Traced& o) { v /= o.v; ts_trace::wrote(this); return *this; }
    explicit operator float() const { return v; }
    explicit operator double() const { return v; }
};
static_assert(sizeof(Traced) == 4, "Traced must have float's layout");
inline Traced operator+(Traced a, Traced b) { return Traced(a.v + b.v); }
inline Traced operator-(Traced a, Traced b) { return Traced(a.v - b.v); }
inline Traced operator*(Traced a, Traced b) { return Traced(a.v * b.v); }
inline Traced operator/(Traced a, Traced b) { return Traced(a.v / b.v); }
inline Traced operator-(Traced a) { return Traced(-a.v); }
inline bool operator<(Traced a, Traced b) { return a.v < b.v; }
inline bool operator>(Traced a, Traced b) { return a.v > b.v; }
inline bool operator<=(Traced a, Traced b) { return a.v <= b.v; }
inline bool operator>=(Traced a, Traced b) { return a.v >= b.v; }
inline bool operator==(Traced a, Traced b) { return a.v == b.v; }
inline bool operator!=(Traced a, Traced b) { return a.v != b.v; }
inline bool isnan(Traced a) { return std::isnan(a.v); }
inline bool isinf(Traced a) { return std::isinf(a.v); }
inline Traced exp(Traced a) { return Traced(std::exp(a.v)); }
inline Traced log(Traced a) { return Traced(std::log(a.v)); }
inline Traced log1p(Traced a) { return Traced(std::log1p(a.v)); }
inline Traced sqrt(Traced a) { return Traced(std::sqrt(a.v)); }
inline Traced fabs(Traced a) { return Traced(std::fabs(a.v)); }
inline Traced abs(Traced a) { return Traced(std::fabs(a.v)); }
inline Traced fmax(Traced a, Traced b) { return Traced(std::fmax(a.v, b.v)); }
inline Traced fmin(Traced a, Traced b) { return Traced(std::fmin(a.v, b.v)); }
// ----- the kernel source, unchanged
"""


@dataclass
class LaunchCall:
    """One ``tinyseg.cuda.launch`` call: what it launched, on which arguments."""

    source: str
    kernel: str
    dtype: np.dtype
    grid: tuple
    block: tuple
    args: tuple
    shared_mem: int
    index_dtype: np.dtype | None = None     # the Index of a kernel<T, Index> (tinyseg.cuda.INDEX_CTYPES)

    @property
    def threads_per_block(self) -> int:
        return int(np.prod(_dims(self.block)))


def _dims(value):
    value = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    return value + (1,) * (3 - len(value))


def record_launches(fn) -> list[LaunchCall]:
    """Run ``fn()`` inside ``cuda_emulation()``; return every launch it made, arguments copied as they were."""
    from .. import backend, cuda
    calls = []
    original = cuda.launch

    def recording(source_name, kernel, dtype, grid, block, args, shared_mem=0, index_dtype=None):
        calls.append(LaunchCall(source_name, kernel, np.dtype(dtype), _dims(grid), _dims(block),
                                tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args), int(shared_mem),
                                None if index_dtype is None else np.dtype(index_dtype)))
        return original(source_name, kernel, dtype, grid, block, args, shared_mem, index_dtype=index_dtype)

    cuda.launch = recording
    try:
        with backend.cuda_emulation():
            fn()
    finally:
        cuda.launch = original
    return calls


_modules: dict = {}


def traced_module(source_name: str):
    """The host build of kernels/``source_name`` with every template kernel instantiated for ``T = Traced``
    (and, for a kernel templated on an index type too, for each index type)."""
    from .emulation import EmulatedModule
    if source_name not in _modules:
        source = kernels_dir() / source_name
        text = source.read_text()
        names = [name for name in template_instances(text, ("Traced",), where=source_name)
                 if "<" in name]                                      # the template kernels only
        folder = Path(tempfile.mkdtemp(prefix="tinyseg-trace-"))
        wrapper = folder / source_name
        wrapper.write_text(TRACED_PRELUDE + text)
        _modules[source_name] = EmulatedModule(wrapper, tuple(names), include_dirs=(source.parent,))
    return _modules[source_name]


def thread_owners(call: LaunchCall) -> dict[int, np.ndarray]:
    """Replay ``call`` traced: {position of an array argument it wrote: owner array of that argument's shape}.

    owner[...] is the global thread index (block index × threads per block + thread index,
    both linearised x fastest) of the thread that last assigned the element; -1 where no
    thread did. ``owner // call.threads_per_block`` is the block.
    """
    if call.dtype != np.float32:
        raise TypeError(f"thread_owners: float32 launches only (Traced is a float), got {call.dtype}")
    module = traced_module(call.source)
    kernel = module.get_function(name_expression(call.kernel, "Traced", call.index_dtype))
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in call.args)
    owners = {i: np.full(a.shape, -1, dtype=np.int64) for i, a in enumerate(args)
              if isinstance(a, np.ndarray) and a.dtype == np.float32}
    lib = module._lib
    lib.ts_trace_clear()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lib.ts_trace_clear)
        for i, owner in owners.items():
            lib.ts_trace_watch(ctypes.c_void_p(args[i].ctypes.data), ctypes.c_longlong(args[i].nbytes),
                               ctypes.c_void_p(owner.ctypes.data))
        kernel(call.grid, call.block, args, shared_mem=call.shared_mem)
    return {i: owner for i, owner in owners.items() if (owner >= 0).any()}
