"""Every kernels/*.cu compiles with nvcc for sm_90 and sm_80 with no warnings, every kernel instantiated."""
import shutil
import subprocess

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
