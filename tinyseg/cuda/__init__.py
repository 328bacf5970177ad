"""tinyseg's GPU kernels: the CUDA C sources in kernels/, how they are launched, and their emulation.

One launch path serves the GPU and the CPU. An op's CUDA kernel class computes the grid
and block sizes and packs the arguments, then calls

    launch("activation.cu", "relu_forward", dtype, grid, block, (x, y, np.int64(n)))

which finds the kernel ``relu_forward<float>`` (or ``<double>``) in
kernels/activation.cu and runs it (a kernel with an index type as its second template
parameter is asked for with ``index_dtype=``: ``launch("pool.cu", "max_pool2d_forward",
dtype, grid, block, args, index_dtype=np.uint8)`` runs ``max_pool2d_forward<float,
unsigned char>``):

* on CuPy arrays, through ``cupy.RawModule`` (NVRTC compiles the source on first use);
* on NumPy arrays inside ``tinyseg.backend.cuda_emulation()``, through the host
  emulation (``tinyseg.cuda.emulation``: g++ compiles the same source).

Every launch, Numba CUDA ones included, is recorded in each active ``cuda_emulation()``
(``emu.launches``): kernel name, grid, block and shared-memory bytes, so a learner can
print how work maps to threads.

Conventions of the sources: every kernel is ``template <typename T> __global__ void
name(...)``, instantiated for float and double (kernels that do not depend on T still
take it, for uniform names), or ``template <typename T, typename Index> __global__ void
name(...)`` when it also stores or reads an unsigned integer index (max pooling's
winners), instantiated for every T and Index in {unsigned char, unsigned short,
unsigned int} (np.uint8, np.uint16, np.uint32; ``INDEX_CTYPES``); array arguments are
C-contiguous; sizes are passed as ``long long`` (np.int64) unless the kernel says
otherwise. ``kernel_templates`` reads these declarations and ``name_expressions`` lists
every instantiation a source gets, for NVRTC, the emulation and the trace alike.
"""
from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import backend

CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# The second template parameter a kernel may take, ``Index``: an unsigned integer type, the
# kernel built for each of these and launched with index_dtype= one of them.
INDEX_CTYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(np.uint16): "unsigned short",
                np.dtype(np.uint32): "unsigned int"}
# A kernel declaration: its template parameter list (if any) and its name.
_KERNEL = re.compile(r"(?:template\s*<([^<>]*)>\s*)?__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s+)?"
                     r"void\s+(\w+)\s*\(")
_TEMPLATE_FORMS = ((), ("T",), ("T", "Index"))


def kernels_dir() -> Path:
    """Where the .cu sources are: tinyseg/kernels in an installed wheel, ./kernels in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "kernels", package.parent / "kernels"):
        if candidate.is_dir() and any(candidate.glob("*.cu")):
            return candidate
    raise FileNotFoundError(f"tinyseg's CUDA sources (kernels/*.cu) are missing: looked in "
                            f"{package / 'kernels'} and {package.parent / 'kernels'}")


def sources() -> list[Path]:
    return sorted(kernels_dir().glob("*.cu"))


def kernel_templates(text: str, where: str = "a CUDA source") -> list[tuple[str, tuple[str, ...]]]:
    """Each kernel the CUDA C ``text`` declares, in order: (name, template parameter names).

    The parameters are () for a plain kernel, ("T",) or ("T", "Index"); any other template
    (a non-type parameter, another name) is refused with the convention, since the
    loader would not know what to instantiate it for.
    """
    kernels = []
    for parameters, name in _KERNEL.findall(text):
        names = ()
        if parameters.strip():
            declared = [p.split() for p in parameters.split(",")]
            if not all(len(p) == 2 and p[0] in ("typename", "class") for p in declared):
                names = None
            else:
                names = tuple(p[1] for p in declared)
        if names not in _TEMPLATE_FORMS:
            raise ValueError(f"{where}: kernel {name} is declared template <{parameters.strip()}>; tinyseg's "
                             f"kernels are template <typename T> (float, double) or template <typename T, "
                             f"typename Index> (Index: {', '.join(INDEX_CTYPES.values())})")
        kernels.append((name, names))
    return kernels


def name_expression(kernel: str, element_type: str, index_dtype=None) -> str:
    """The name a kernel instance is built, looked up and recorded under: ``kernel<float>``, or
    ``kernel<float, unsigned char>`` with ``index_dtype=np.uint8`` (``element_type`` is a C
    type: "float", "double", or "Traced" in tinyseg.cuda.trace)."""
    if index_dtype is None:
        return f"{kernel}<{element_type}>"
    index_dtype = np.dtype(index_dtype)
    if index_dtype not in INDEX_CTYPES:
        raise TypeError(f"{kernel}: the index types of CUDA kernels are "
                        f"{', '.join(d.name for d in INDEX_CTYPES)}, got {index_dtype}")
    return f"{kernel}<{element_type}, {INDEX_CTYPES[index_dtype]}>"


def template_instances(text: str, element_types=tuple(CTYPES.values()),
                       where: str = "a CUDA source") -> tuple[str, ...]:
    """Every name expression of the kernels in ``text``: each template kernel for each T in
    ``element_types`` (and each Index of INDEX_CTYPES where it takes one), plain kernels as they are."""
    names = []
    for name, parameters in kernel_templates(text, where):
        if not parameters:
            names.append(name)
            continue
        indexes = tuple(INDEX_CTYPES) if "Index" in parameters else (None,)
        names += [name_expression(name, element_type, index) for element_type in element_types for index in indexes]
    return tuple(dict.fromkeys(names))


def name_expressions(source: Path) -> tuple[str, ...]:
    """The kernels a source defines, as name expressions: ``name<float>``, ``name<double>`` for templates on T,
    ``name<float, unsigned char>`` ... ``name<double, unsigned int>`` for templates on T and Index."""
    return template_instances(source.read_text(), where=source.name)


# ----- launch records

@dataclass(frozen=True)
class Launch:
    """One kernel launch: what ran, on how many blocks of how many threads, with how much shared memory."""

    kernel: str
    grid: tuple
    block: tuple
    shared_mem: int
    where: str            # "emulation", "gpu", "numba-cuda-simulator" or "numba-cuda"

    @property
    def threads(self) -> int:
        return int(np.prod(self.grid) * np.prod(self.block))

    def __str__(self):
        return (f"{self.kernel} <<<grid {self.grid}, block {self.block}, {self.shared_mem} B shared>>> "
                f"= {self.threads} threads ({self.where})")


class GuardBandError(AssertionError):
    """A kernel wrote outside an array it was given."""


class CudaEmulation:
    """What ``tinyseg.backend.cuda_emulation()`` yields: ``.launches``, every launch made inside it.

    With ``guard_band=True``, each emulated launch runs on copies of its array arguments
    placed inside larger buffers whose margins hold 0xFF bytes (NaN as a float), and fails
    if a margin changed: a kernel that writes out of bounds is caught, and one that reads
    out of bounds reads NaN, which the tests' value comparisons catch.
    """

    GUARD_BYTES = 256

    def __init__(self, guard_band=False):
        self.launches: list[Launch] = []
        self.guard_band = guard_band

    def kernels(self) -> list[str]:
        return [launch.kernel for launch in self.launches]

    def clear(self):
        self.launches.clear()


_state = threading.local()


def _active() -> list:
    if not hasattr(_state, "emulations"):
        _state.emulations = []
    return _state.emulations


def emulation_active() -> bool:
    return bool(_active())


@contextlib.contextmanager
def cuda_emulation(guard_band=False):
    """Inside: "cuda"/"cuda_v*" kernels run on NumPy arrays through the host emulation; launches recorded."""
    emulation = CudaEmulation(guard_band)
    _active().append(emulation)
    try:
        yield emulation
    finally:
        _active().remove(emulation)


def _dims(value) -> tuple:
    value = (int(value),) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    return value + (1,) * (3 - len(value))


def record(kernel, grid, block, shared_mem, where):
    """Add one launch to every active ``cuda_emulation()`` (Numba CUDA launches call this too)."""
    if _active():
        launch = Launch(kernel, _dims(grid), _dims(block), int(shared_mem), where)
        for emulation in _active():
            emulation.launches.append(launch)


# ----- modules: one per source and place (GPU / emulation), built on first use

_modules: dict = {}
_expressions: dict = {}          # source name -> the name expressions its modules were built with
_modules_lock = threading.Lock()


def _module(source_name: str, on_gpu: bool):
    key = (source_name, on_gpu)
    with _modules_lock:
        if key not in _modules:
            source = kernels_dir() / source_name
            if not source.exists():
                raise FileNotFoundError(f"no CUDA source {source_name!r} in {kernels_dir()}")
            expressions = name_expressions(source)
            _expressions[source_name] = expressions
            if on_gpu:
                cp = backend.cupy_module()
                _modules[key] = cp.RawModule(code=source.read_text(), options=("-std=c++17", f"-I{source.parent}"),
                                             name_expressions=expressions)
            else:
                from .emulation import EmulatedModule
                _modules[key] = EmulatedModule(source, expressions)
        return _modules[key]


def where_kernels_run(*arrays) -> str:
    """'gpu' for CuPy arrays, 'emulation' for NumPy arrays inside cuda_emulation(); else a clear error."""
    if backend.get_array_module(*arrays) is not np:
        return "gpu"
    if emulation_active():
        return "emulation"
    raise RuntimeError("CUDA kernels run on CuPy arrays (tensor.to('cuda')), or on NumPy arrays inside "
                       "`with tinyseg.backend.cuda_emulation():` (the CPU emulation); got NumPy arrays "
                       "outside it")


def launch(source_name, kernel, dtype, grid, block, args, shared_mem=0, index_dtype=None):
    """Launch ``kernel<T>`` (T from ``dtype``) of kernels/``source_name`` on ``grid`` × ``block`` threads.

    A kernel templated on an index type as well runs as ``kernel<T, Index>``, Index from
    ``index_dtype`` (np.uint8, np.uint16 or np.uint32; see INDEX_CTYPES).
    """
    dtype = np.dtype(dtype)
    if dtype not in CTYPES:
        raise TypeError(f"{kernel}: CUDA kernels are built for float32 and float64, got {dtype}")
    where = where_kernels_run(*[a for a in args if hasattr(a, "shape") and not isinstance(a, np.generic)])
    name = name_expression(kernel, CTYPES[dtype], index_dtype)
    module = _module(source_name, where == "gpu")
    if name not in _expressions[source_name]:
        forms = [e for e in _expressions[source_name] if e.split("<")[0] == kernel]
        raise KeyError(f"{source_name} has no kernel {name!r}" +
                       (f"; {kernel} is built as {', '.join(forms)}" if forms else "") +
                       (" (pass index_dtype=)" if forms and index_dtype is None else ""))
    function = module.get_function(name)
    record(name, grid, block, shared_mem, where)
    if where == "emulation" and any(e.guard_band for e in _active()):
        _launch_with_guard_bands(name, function, _dims(grid), _dims(block), tuple(args), int(shared_mem))
    else:
        function(_dims(grid), _dims(block), tuple(args), shared_mem=int(shared_mem))


def _launch_with_guard_bands(name, function, grid, block, args, shared_mem):
    margin = CudaEmulation.GUARD_BYTES
    guarded, buffers = [], []
    for arg in args:
        if isinstance(arg, np.ndarray):
            buffer = np.full(arg.nbytes + 2 * margin, 0xFF, dtype=np.uint8)
            inner = buffer[margin:margin + arg.nbytes].view(arg.dtype).reshape(arg.shape)
            inner[...] = arg
            guarded.append(inner)
            buffers.append((arg, inner, buffer))
        else:
            guarded.append(arg)
    function(grid, block, tuple(guarded), shared_mem=shared_mem)
    for position, (arg, inner, buffer) in enumerate(buffers):
        for side, band in (("before", buffer[:margin]), ("after", buffer[margin + arg.nbytes:])):
            if (band != 0xFF).any():
                raise GuardBandError(f"{name} <<<{grid}, {block}>>> wrote {np.count_nonzero(band != 0xFF)} "
                                     f"bytes {side} its array argument #{position} (shape {arg.shape})")
        arg[...] = inner


def blocks_for(count: int, threads: int) -> int:
    """The number of blocks of ``threads`` threads that cover ``count`` items (at least 1)."""
    return max(1, -(-int(count) // threads))
