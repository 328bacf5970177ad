"""Every notebook in docs/notebooks runs, and its stored .ipynb is not stale.

Each notebook source (``docs/notebooks/*.py``, jupytext percent format, found by glob, so
notebooks added later are covered) is executed top to bottom in a fresh kernel with the
small settings (TINYSEG_NOTEBOOK_FAST=1) and matplotlib's Agg backend; any error fails
the test with the failing cell and its traceback. Each source must also have an executed
``.ipynb`` beside it that holds outputs, was built with full settings and has exactly the
source's code cells: rebuild with ``python docs/notebooks/build.py NAME.py`` after an edit.
"""
import importlib.util
import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "docs" / "notebooks"


def _load_build():
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()
SOURCES = build.notebook_sources(NOTEBOOKS)


def _require(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"notebook tests need {', '.join(missing)} (the dev extra: pip install -e \".[dev]\")")


def test_notebooks_are_found():
    assert SOURCES, f"no notebook sources in {NOTEBOOKS}"
    assert all(p.suffix == ".py" and p.name != "build.py" for p in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_notebook_runs(source):
    _require("jupytext", "nbclient", "nbformat", "ipykernel")
    from nbclient.exceptions import CellExecutionError

    start = time.perf_counter()
    try:
        notebook = build.execute(source, fast=True, timeout=300, mpl_backend="Agg")
    except CellExecutionError as error:      # its message holds the cell's source and the traceback
        pytest.fail(f"{source.name} failed in fast mode:\n{error}", pytrace=False)
    seconds = time.perf_counter() - start
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        f"{source.name}: no cell produced any output"
    print(f"{source.name}: {seconds:.1f} s in fast mode")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_stored_notebook_is_current(source):
    _require("jupytext", "nbformat")
    import nbformat

    stored_path = source.with_suffix(".ipynb")
    rebuild = f"rebuild it: python docs/notebooks/build.py {source.name}"
    assert stored_path.is_file(), f"{source.name} has no executed {stored_path.name} beside it; {rebuild}"
    stored = nbformat.read(stored_path, as_version=4)
    expected = build.code_cells(build.read_source(source))
    got = build.code_cells(stored)
    assert got == expected, (f"{stored_path.name} is stale: its code cells differ from {source.name} "
                             f"(first difference at code cell "
                             f"{next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))}); "
                             f"{rebuild}")
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code), \
        f"{stored_path.name} was not executed (cells without an execution count); {rebuild}"
    assert any(cell.get("outputs") for cell in code), f"{stored_path.name} holds no outputs; {rebuild}"
    errors = [out for cell in code for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{stored_path.name} stores an error output ({errors[0].get('ename')}); {rebuild}"
    assert stored.metadata.get("tinyseg", {}).get("fast") is False, \
        f"{stored_path.name} was not built with full settings; {rebuild} (without --fast)"
    assert stored_path.stat().st_size < 2_000_000, f"{stored_path.name} is over 2 MB: lower the figure DPI"


def test_real_data_notebook_falls_back_without_data(tmp_path):
    """Notebook 5 runs where the ISBI data are absent (CI): phantoms, and a message that says so."""
    _require("jupytext", "nbclient", "nbformat", "ipykernel")
    source = NOTEBOOKS / "05_real_data_isbi.py"
    if not source.is_file():
        pytest.skip("docs/notebooks/05_real_data_isbi.py is not there")
    notebook = build.execute(source, fast=True, timeout=300, mpl_backend="Agg",
                             extra_env={"TINYSEG_DATA": str(tmp_path / "no_such_folder")})
    printed = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert "DATA WERE NOT FOUND" in printed and "synthetic phantoms" in printed
