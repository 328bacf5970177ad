"""Run kernels/*.cu on the CPU: g++ compiles the CUDA C source with emulation.h in front.

An ``EmulatedModule`` is the CPU twin of ``cupy.RawModule``: built from the same source
and the same name expressions (``relu_forward<float>``, ``max_pool2d_forward<double,
unsigned short>``: each one's address is taken in a generated entry point, which
instantiates the template), ``get_function(name)`` returns a kernel called exactly
like a CuPy ``RawKernel`` — ``kernel(grid, block, args, shared_mem=0)`` — with NumPy
arrays where CuPy would take device arrays. Each argument is checked against the
kernel's parameter list before the launch (size of a value, element size behind a
pointer), so a launch that would pass an int64 where the kernel takes an ``int`` (and
scramble every later argument on a GPU) fails here, on a laptop, with a clear message.

The one change made to the source: ``extern __shared__ T name[];`` (dynamic shared
memory, sized at launch) becomes a pointer to the launch's shared-memory buffer, since
C++ has no such declaration. Everything else compiles as written; see emulation.h for
what the emulation models and what it does not.

Built libraries are cached under ``~/.cache/tinyseg/emulation`` (or
``$TINYSEG_CACHE_DIR/emulation``), keyed by the source, the header, the kernel list and
the compiler, so each source compiles once per machine (a few seconds with g++).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

HEADER = Path(__file__).with_name("emulation.h")
COMPILER_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing",
                  "-Wno-unknown-pragmas")

_DYNAMIC_SHARED = re.compile(
    r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)\s+(\w+)\s*\[\s*\]\s*;")

# One launch at a time: the emulated threads share the scheduler in emulation.h.
_launch_lock = threading.Lock()


class EmulationError(RuntimeError):
    """A kernel could not be compiled or launched under the emulation."""


def cache_dir() -> Path:
    root = os.environ.get("TINYSEG_CACHE_DIR") or Path.home() / ".cache" / "tinyseg"
    return Path(root) / "emulation"


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise EmulationError("the CUDA emulation compiles kernels with a C++17 compiler: "
                             "install g++ (or set CXX)")
    return cxx


def rewrite_for_host(source: str) -> str:
    """The source with each ``extern __shared__ T name[];`` made a pointer to the launch's buffer."""
    return _DYNAMIC_SHARED.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(ts_emu::dynamic_shared_memory());",
        source)


def _wrapper(name_expressions) -> str:
    lines = ['extern "C" const char* ts_last_error() { return ts_emu::last_error(); }']
    for i, expression in enumerate(name_expressions):
        lines.append(f'extern "C" int ts_launch_{i}(const unsigned int* g, const unsigned int* b, '
                     f'unsigned long long shared, void** args) '
                     f'{{ return ts_emu::launch(&{expression}, g, b, shared, args); }}')
        lines.append(f'extern "C" int ts_describe_{i}(long long* out) '
                     f'{{ return ts_emu::describe(&{expression}, out); }}')
    return "\n".join(lines) + "\n"


def _compiler_identity(cxx) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx


def build(source_path: Path, name_expressions, include_dirs=()) -> Path:
    """Compile ``source_path`` for the host and return the shared library (cached)."""
    cxx = compiler()
    text = rewrite_for_host(source_path.read_text())
    unit = text + "\n// ----- generated launch entry points\n" + _wrapper(name_expressions)
    include_texts = "".join(p.read_text() for d in include_dirs for p in sorted(Path(d).glob("*.cuh")))
    key = hashlib.sha256("\0".join([unit, HEADER.read_text(), include_texts, " ".join(COMPILER_FLAGS),
                                    _compiler_identity(cxx)]).encode()).hexdigest()[:24]
    target = cache_dir() / f"{source_path.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        cpp = Path(work) / f"{source_path.stem}.cpp"
        cpp.write_text(f'#line 1 "{source_path}"\n' + unit)
        partial = Path(work) / target.name
        command = [cxx, *COMPILER_FLAGS, "-include", str(HEADER),
                   *[f"-I{d}" for d in (source_path.parent, *include_dirs)], str(cpp), "-o", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise EmulationError(f"g++ could not compile {source_path.name} for the CUDA emulation:\n"
                                 f"{done.stderr[-4000:]}")
        os.replace(partial, target)          # atomic: a concurrent build never sees half a library
    return target


class EmulatedKernel:
    """One kernel of an EmulatedModule, called like ``cupy.RawKernel``: ``k(grid, block, args, shared_mem=0)``."""

    def __init__(self, module, index, name):
        self.name = name
        self._launch = getattr(module._lib, f"ts_launch_{index}")
        self._launch.restype = ctypes.c_int
        describe = getattr(module._lib, f"ts_describe_{index}")
        describe.restype = ctypes.c_int
        table = (ctypes.c_longlong * (3 * 64))()
        count = describe(table)
        # per parameter: (bytes of the value, bytes behind a pointer or 0, is floating point)
        self.parameters = [tuple(table[3 * i:3 * i + 3]) for i in range(count)]
        self._module = module

    def _pack(self, args):
        if len(args) != len(self.parameters):
            raise TypeError(f"{self.name}: the kernel takes {len(self.parameters)} arguments, "
                            f"got {len(args)}")
        holders = []
        for i, (arg, (size, pointee, is_float)) in enumerate(zip(args, self.parameters)):
            where = f"{self.name}: argument {i}"
            if isinstance(arg, np.ndarray):
                if pointee == 0:
                    raise TypeError(f"{where} is a {size}-byte value, got an array")
                if pointee > 0 and arg.itemsize != pointee:
                    raise TypeError(f"{where} points to {pointee}-byte elements, got a {arg.dtype} array")
                if not arg.flags.c_contiguous:
                    raise ValueError(f"{where}: kernels read C-contiguous arrays, got strides {arg.strides}")
                holders.append(ctypes.c_void_p(arg.ctypes.data))
            elif isinstance(arg, np.generic):
                value = np.asarray(arg)
                kind_float = value.dtype.kind == "f"
                if pointee != 0 or value.itemsize != size or kind_float != bool(is_float):
                    expected = "a pointer (an array)" if pointee else \
                        f"a {size}-byte {'floating-point' if is_float else 'integer'} value"
                    raise TypeError(f"{where} is {expected}, got {value.dtype} "
                                    f"(pass np.int32 for int, np.int64 for long long, np.float32 for float)")
                holders.append(value)
            else:
                raise TypeError(f"{where}: pass NumPy arrays and NumPy scalars with the kernel's exact "
                                f"types (as CuPy requires), got {type(arg).__name__}")
        pointers = (ctypes.c_void_p * max(len(holders), 1))(
            *[ctypes.addressof(h) if isinstance(h, ctypes.c_void_p) else h.ctypes.data for h in holders])
        return pointers, holders

    def __call__(self, grid, block, args, shared_mem=0):
        grid, block = _dim3(grid), _dim3(block)
        pointers, holders = self._pack(tuple(args))
        g, b = (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block)
        with _launch_lock:
            status = self._launch(g, b, ctypes.c_ulonglong(int(shared_mem)), pointers)
            if status != 0:
                raise EmulationError(f"{self.name} <<<{grid}, {block}, {shared_mem}>>>: "
                                     f"{self._module._lib.ts_last_error().decode()}")
        del holders


def _dim3(value):
    value = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(value) <= 3 or any(int(v) < 1 for v in value):
        raise ValueError(f"grid/block: expected 1 to 3 positive sizes, got {value}")
    return tuple(int(v) for v in value) + (1,) * (3 - len(value))


class EmulatedModule:
    """The host build of one .cu source: ``get_function(name_expression)`` as with CuPy's RawModule."""

    def __init__(self, source_path, name_expressions, include_dirs=()):
        self.source_path = Path(source_path)
        self.name_expressions = tuple(name_expressions)
        self._lib = ctypes.CDLL(str(build(self.source_path, self.name_expressions, include_dirs)))
        self._lib.ts_last_error.restype = ctypes.c_char_p
        self._kernels = {}

    def get_function(self, name):
        if name not in self._kernels:
            if name not in self.name_expressions:
                raise KeyError(f"{self.source_path.name} has no kernel {name!r}; it has "
                               f"{', '.join(self.name_expressions)}")
            self._kernels[name] = EmulatedKernel(self, self.name_expressions.index(name), name)
        return self._kernels[name]
