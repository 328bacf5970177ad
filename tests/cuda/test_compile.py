"""Every kernels/*.cu compiles with nvcc for sm_90 and sm_80 with no warnings, every kernel instantiated."""
import shutil
import subprocess

import numpy as np
import pytest

from tinyseg import cuda

SOURCES = cuda.sources()
NVCC = shutil.which("nvcc")


def instantiating_unit(source):
    """A translation unit that includes ``source`` and takes the address of every kernel, so each is compiled."""
    addresses = ", ".join(f"(void*)&{name}" for name in cuda.name_expressions(source))
    return f'#include "{source}"\nvoid* tinyseg_instances[] = {{{addresses}}};\n'


def test_every_source_defines_kernels():
    assert SOURCES, "kernels/ holds no .cu file"
    for source in SOURCES:
        assert cuda.name_expressions(source), f"{source.name} defines no __global__ kernel"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed: the CUDA sources are not compiled for the GPU here")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_nvcc_compiles_without_warnings(source, arch, tmp_path):
    unit = tmp_path / f"{source.stem}_all.cu"
    unit.write_text(instantiating_unit(source))
    done = subprocess.run([NVCC, "-std=c++17", f"-arch={arch}", "--cubin", "-Werror", "all-warnings",
                           f"-I{source.parent}", str(unit), "-o", str(tmp_path / "out.cubin")],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"nvcc {arch} {source.name}:\n{done.stderr}"
    assert "warning" not in (done.stdout + done.stderr).lower()


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulation needs g++")
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_emulation_builds_every_source(source):
    from tinyseg.cuda.emulation import EmulatedModule
    module = EmulatedModule(source, cuda.name_expressions(source))
    for name in module.name_expressions:
        assert module.get_function(name).parameters


# ----- NVRTC, the compiler CuPy's RawModule uses on a GPU machine

def _nvrtc():
    """libnvrtc from the nvidia-cuda-nvrtc wheel (the dev extra, on Linux x86-64), or None."""
    import ctypes
    try:
        import nvidia.cuda_nvrtc
    except ImportError:
        return None
    for folder in nvidia.cuda_nvrtc.__path__:
        for library in sorted((__import__("pathlib").Path(folder) / "lib").glob("libnvrtc.so*")):
            return ctypes.CDLL(str(library))
    return None


NVRTC = _nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="NVRTC is not installed (pip install nvidia-cuda-nvrtc-cu12): "
                                          "the sources are not compiled as CuPy compiles them")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
@pytest.mark.parametrize("source", SOURCES, ids=[s.name for s in SOURCES])
def test_nvrtc_compiles_every_kernel_as_cupy_does(source, arch):
    """The RawModule path: the source text, CuPy's options, one name expression per kernel."""
    import ctypes
    program = ctypes.c_void_p()
    text = source.read_text().encode()
    assert NVRTC.nvrtcCreateProgram(ctypes.byref(program), text, source.name.encode(), 0, None, None) == 0
    expressions = cuda.name_expressions(source)
    for expression in expressions:
        assert NVRTC.nvrtcAddNameExpression(program, expression.encode()) == 0
    options = [b"-std=c++17", f"-I{source.parent}".encode(), f"--gpu-architecture={arch}".encode()]
    status = NVRTC.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
    size = ctypes.c_size_t()
    NVRTC.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    NVRTC.nvrtcGetProgramLog(program, log)
    assert status == 0, f"NVRTC {arch} {source.name}:\n{log.value.decode()}"
    assert "warning" not in log.value.decode().lower(), log.value.decode()
    for expression in expressions:
        lowered = ctypes.c_char_p()
        assert NVRTC.nvrtcGetLoweredName(program, expression.encode(), ctypes.byref(lowered)) == 0
        assert lowered.value, expression
    NVRTC.nvrtcDestroyProgram(ctypes.byref(program))


# ----- the template forms the loader instantiates

def test_kernels_templated_on_an_index_type_get_every_element_and_index_type():
    text = """
    template <typename T, typename Index>
    __global__ void argmax(const T* x, Index* winner) {}
    template <typename T>
    __global__ __launch_bounds__(256) void scale(T* x) {}
    __global__ void plain(int* out) {}
    template <typename T, typename Problem>
    __device__ void not_a_kernel(const Problem& p) {}
    """
    assert cuda.kernel_templates(text) == [("argmax", ("T", "Index")), ("scale", ("T",)), ("plain", ())]
    assert cuda.template_instances(text) == (
        "argmax<float, unsigned char>", "argmax<float, unsigned short>", "argmax<float, unsigned int>",
        "argmax<double, unsigned char>", "argmax<double, unsigned short>", "argmax<double, unsigned int>",
        "scale<float>", "scale<double>", "plain")
    assert cuda.name_expression("argmax", "double", np.uint16) == "argmax<double, unsigned short>"
    assert cuda.name_expression("scale", "float") == "scale<float>"
    with pytest.raises(TypeError, match="uint8, uint16, uint32, got int64"):
        cuda.name_expression("argmax", "float", np.int64)


@pytest.mark.parametrize("declaration", ["template <typename T, int N>", "template <typename T, typename U>",
                                         "template <typename Index>",
                                         "template <typename T, typename Index, typename U>"])
def test_other_kernel_templates_are_refused_with_the_convention(declaration):
    with pytest.raises(ValueError, match=r"kernel k is declared .*template <typename T, typename Index>"):
        cuda.kernel_templates(f"{declaration}\n__global__ void k(int* x) {{}}")


def test_pool_max_kernels_are_one_template_each_on_the_winner_type():
    names = cuda.name_expressions(cuda.kernels_dir() / "pool.cu")
    for kernel in ("max_pool2d_forward", "max_pool2d_backward"):
        assert [n for n in names if n.startswith(kernel + "<")] == [
            f"{kernel}<{t}, {i}>" for t in ("float", "double")
            for i in ("unsigned char", "unsigned short", "unsigned int")]
    assert not [n for n in names if "_u8" in n or "_u16" in n or "_u32" in n]
