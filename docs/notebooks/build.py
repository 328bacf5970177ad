"""Turn every notebook source here into an executed ``.ipynb``.

    python docs/notebooks/build.py                    # every NN_name.py, full settings
    python docs/notebooks/build.py 02_convolution.py  # only these
    python docs/notebooks/build.py --fast             # small settings (TINYSEG_NOTEBOOK_FAST=1)
    python docs/notebooks/build.py --text-only NAME.py   # prose edits only: keep the stored outputs

The reviewable source of each notebook is ``NN_name.py`` in jupytext's percent format
(``# %%`` starts a code cell, ``# %% [markdown]`` a text cell). This script reads it,
runs every cell top to bottom in a fresh Python kernel and writes ``NN_name.ipynb`` beside
it with the outputs (numbers and pictures), so that the notebook reads well on a code
host without running it. The kernel's working directory is this folder,
``docs/notebooks/``, as when a reader opens the notebook here in Jupyter; notebooks find
the repository root from there (``../..``). Pictures render through matplotlib's inline
backend; the inline figure DPI is set low enough to keep each ``.ipynb`` small.

A notebook is every ``*.py`` file in this folder except this script and names starting
with ``_``; ``tests/test_notebooks.py`` runs them all in fast mode and checks that each
stored ``.ipynb`` holds outputs and the same code as its source (rebuild after editing).
The stored notebooks are built with full settings; ``--fast`` builds are for trying
things out and are marked as such in the notebook's metadata.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAST_ENV = "TINYSEG_NOTEBOOK_FAST"


def notebook_sources(folder: Path = HERE) -> list[Path]:
    """The notebook sources in ``folder``: every .py file but this script and ``_private.py``."""
    return sorted(p for p in folder.glob("*.py") if p.name != "build.py" and not p.name.startswith("_"))


def read_source(path: Path):
    """The notebook (nbformat v4) that a jupytext percent-format source describes, without outputs."""
    import jupytext
    return jupytext.read(path, fmt="py:percent")


def code_cells(notebook) -> list[str]:
    """The source of every code cell, trailing blank lines removed (what must match between .py and .ipynb)."""
    return [cell.source.rstrip() for cell in notebook.cells if cell.cell_type == "code"]


def execute(path: Path, fast: bool, timeout: int = 3600, kernel_name: str = "python3",
            mpl_backend: str = "module://matplotlib_inline.backend_inline", extra_env: dict | None = None):
    """Run the notebook source ``path`` in a fresh kernel; return the executed notebook.

    ``mpl_backend`` becomes the kernel's MPLBACKEND: the inline backend stores pictures in
    the notebook; the tests pass "Agg", which draws nothing on screen. ``extra_env`` adds
    environment variables for the kernel (e.g. TINYSEG_DATA).

    Raises ``nbclient.exceptions.CellExecutionError`` (which shows the failing cell and its
    traceback) on the first cell that raises.
    """
    from nbclient import NotebookClient

    notebook = read_source(path)
    notebook.metadata["kernelspec"] = {"name": kernel_name, "display_name": "Python 3", "language": "python"}
    notebook.metadata["tinyseg"] = {"fast": bool(fast)}
    env = dict(os.environ)
    env["MPLBACKEND"] = mpl_backend
    if fast:
        env[FAST_ENV] = "1"
    else:
        env.pop(FAST_ENV, None)
    env.update(extra_env or {})
    client = NotebookClient(notebook, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)     # a fresh kernel, started with this environment
    return notebook


def refresh_text(path: Path):
    """The stored .ipynb of ``path`` with its Markdown cells taken from the source, outputs kept.

    For prose edits: refused (ValueError) unless the code cells are exactly those that
    produced the stored outputs, so no output can end up beside code that did not make it.
    """
    import nbformat

    stored = nbformat.read(path.with_suffix(".ipynb"), as_version=4)
    source = read_source(path)
    if code_cells(stored) != code_cells(source):
        raise ValueError(f"{path.name}: the code cells changed since the .ipynb was built; run it again instead")
    executed = iter(cell for cell in stored.cells if cell.cell_type == "code")
    unchanged = {cell.source: cell for cell in stored.cells if cell.cell_type == "markdown"}   # keeps cell ids
    source.cells = [next(executed) if cell.cell_type == "code" else unchanged.get(cell.source, cell)
                    for cell in source.cells]
    source.metadata = stored.metadata
    return source


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="sources to build (default: every notebook here)")
    parser.add_argument("--fast", action="store_true", help=f"small settings ({FAST_ENV}=1)")
    parser.add_argument("--text-only", action="store_true",
                        help="update only the Markdown cells of the stored .ipynb (code unchanged, outputs kept)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    import nbformat

    # A bare name is looked up in this folder, so the commands above work from anywhere.
    paths = [(Path(p) if Path(p).exists() else HERE / p).resolve() for p in args.notebooks] or notebook_sources()
    for path in paths:
        if args.text_only:
            nbformat.write(refresh_text(path), path.with_suffix(".ipynb"))
            print(f"{path.name}: text of {path.with_suffix('.ipynb').name} updated, outputs kept", flush=True)
            continue
        start = time.perf_counter()
        print(f"{path.name}: running ({'fast' if args.fast else 'full'} settings) ...", flush=True)
        notebook = execute(path, fast=args.fast, timeout=args.timeout)
        target = path.with_suffix(".ipynb")
        nbformat.write(notebook, target)
        size = target.stat().st_size / 1e6
        print(f"{path.name}: wrote {target.name} ({size:.2f} MB) in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
