"""The ```python blocks of the README and docs/ run.

Every fenced block opened with ```python in README.md, docs/*.md and docs/math/*.md is
executed; the blocks of one file run in order in one fresh Python process, sharing their
names (a later block may use what an earlier one defined), with the repository root as
the working directory. A block that is only an illustration (placeholders such as
``model`` or ``image`` that it does not define) is marked by the line
``<!-- no-run -->`` (a reason may follow inside the comment, ``<!-- no-run: why -->``)
as the last non-blank line before its opening fence; it is skipped.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!--\s*no-run\b.*-->$")
FENCE = re.compile(r"^(\s*)```python\s*$")

# Runs the blocks of one file in one namespace; names the failing block by its first line.
RUNNER = r"""
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
namespace = {"__name__": "__main__"}
for line, code in blocks:
    try:
        exec(compile(code, f"{sys.argv[1]}:{line}", "exec"), namespace)
    except BaseException:
        print(f"the block at {sys.argv[1]} line {line} failed:\n{code}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "math").glob("*.md"))]


def python_blocks(text: str):
    """(first code line number, code, runnable) for every ```python block of a Markdown text."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        indent, start = len(match.group(1)), i + 1
        end = start
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(line[indent:] for line in lines[start:end])
        blocks.append((start + 1, code, not MARKER.match(previous)))
        i = end + 1
    return blocks


def test_block_extraction():
    text = "intro\n```python\nx = 1\n```\n<!-- no-run: a sketch -->\n\n```python\nmodel(x)\n```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "x = 1", True), (8, "model(x)", False)]


FILES = [p for p in markdown_files() if any(run for _, _, run in python_blocks(p.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_python_blocks_run(path):
    blocks = [(line, code) for line, code, run in python_blocks(path.read_text(encoding="utf-8")) if run]
    result = subprocess.run([sys.executable, "-c", RUNNER, str(path.relative_to(ROOT))], input=json.dumps(blocks),
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-4000:]
