"""The README's commands are what CI runs, and a test run names the optional parts it could not test."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return block.group(1).strip().splitlines()


def test_the_two_setup_commands_open_the_readme():
    text = (ROOT / "README.md").read_text()
    assert text.index("```bash") < 20                    # right under the title
    commands = readme_commands()
    assert commands[0] == "pip install -e . && python examples/train_unet.py"
    assert commands[1].startswith("pip install -e \".[dev,torch-ref]\"") and commands[1].endswith("pytest -q")


def test_ci_runs_exactly_the_readme_test_command():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    commands = [line for line in lines if line and not line.startswith("#")]
    assert readme_commands()[1] in commands
    assert not any("pip install" in c and c != readme_commands()[1] for c in commands), commands


def test_the_torch_reference_is_pinned():
    """Unpinned, pip may pick a multi-GB CUDA build of another version than the tests were checked against."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^torch-ref = \["torch==2\.13\.0"\]$', pyproject, re.MULTILINE)


def test_skipped_optional_parts_get_one_summary_line_each(tmp_path):
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    reasons = ["could not import 'torch': No module named 'torch'"] * 3 + [
        "could not import 'scipy.ndimage': No module named 'scipy'",
        "nvcc is not installed: the CUDA sources are not compiled for the GPU here",
        "the 'cupy' kernel needs CuPy and a GPU", "no CUDA device",
        "ISBI 2012 EM data not present in ../shared/data",
        "CuPy is installed here", "longdouble is float64 on this platform"]
    tests = "\n".join(f"def test_{i}():\n    pytest.skip({reason!r})\n" for i, reason in enumerate(reasons))
    (tmp_path / "test_parts.py").write_text("import pytest\n\n" + tests + "\ndef test_runs():\n    pass\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    section = out[out.index("optional parts not tested here"):].splitlines()[1:]
    section = [line for line in section if line and not line.startswith("=") and " passed" not in line]
    assert section == [
        "PyTorch reference: 3 skipped (could not import 'torch': No module named 'torch'); to run them: "
        'pip install -e ".[dev,torch-ref]" (torch==2.13.0, the CPU build)',
        "nvcc: 1 skipped (nvcc is not installed: the CUDA sources are not compiled for the GPU here); to run "
        "them: the CUDA toolkit's nvcc on PATH",
        "CuPy / CUDA GPU: 2 skipped (the 'cupy' kernel needs CuPy and a GPU); to run them: a CUDA GPU and "
        'pip install -e ".[gpu]"',
        "SciPy (cross-checks): 1 skipped (could not import 'scipy.ndimage': No module named 'scipy'); to run "
        "them: pip install scipy",
        "data: 1 skipped (ISBI 2012 EM data not present in ../shared/data); to run them: the data under "
        "../shared/data",
        "other: 2 skipped (e.g. CuPy is installed here)",
    ], out
    assert "1 passed, 10 skipped" in out
