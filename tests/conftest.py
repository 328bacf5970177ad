"""Settings every test session needs before any test module imports Numba."""
import os

# Without an NVIDIA GPU, Numba's CUDA kernels ("numba_cuda") run in Numba's CUDA simulator,
# which Numba reads from the environment when it is first imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


# ----------------------------------------------------------------------------- skipped parts
# A new user's run must not hide that a whole part was not tested: skipped tests are
# counted by the optional part they need, and each part missing gets one summary line.
import re

OPTIONAL_PARTS = [   # (part, pattern in the skip reason, how to get it)
    ("PyTorch reference", r"\btorch\b", 'pip install -e ".[dev,torch-ref]" (torch==2.13.0, the CPU build)'),
    ("nvcc", r"\bnvcc\b", "the CUDA toolkit's nvcc on PATH"),
    ("CuPy / CUDA GPU", r"cupy|cuda device|\bgpu\b", 'a CUDA GPU and pip install -e ".[gpu]"'),
    ("g++ (CUDA emulation)", r"g\+\+", "a C++ compiler: apt-get install g++"),
    ("SciPy (cross-checks)", r"scipy", "pip install scipy"),
    ("data", r"data not present|not present in|data set|dataset absent", "the data under ../shared/data"),
    ("notebook tools", r"notebook", 'pip install -e ".[dev]"'),
]


def skipped_parts(reasons):
    """{part: (count, first reason, hint)} of skip reasons, in OPTIONAL_PARTS order; reasons
    that match no part (a platform limit, a test of the other case) fall under 'other'."""
    found = {}
    for reason in reasons:
        for part, pattern, hint in OPTIONAL_PARTS:
            # "CuPy is installed here" skips a test of the *absent* case: not a missing part.
            if re.search(pattern, reason, re.IGNORECASE) and "is installed here" not in reason:
                break
        else:
            part, hint = "other", "-"
        count, first, _ = found.get(part, (0, reason, hint))
        found[part] = (count + 1, first, hint)
    order = [part for part, _, _ in OPTIONAL_PARTS] + ["other"]
    return {part: found[part] for part in order if part in found}


def pytest_terminal_summary(terminalreporter):
    reasons = []
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons.append(reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason)
    parts = skipped_parts(reasons)
    if not parts:
        return
    terminalreporter.section("optional parts not tested here")
    for part, (count, first, hint) in parts.items():
        if part == "other":
            terminalreporter.line(f"other: {count} skipped (e.g. {first})")
        else:
            terminalreporter.line(f"{part}: {count} skipped ({first}); to run them: {hint}")


# ----------------------------------------------------------------------------- measured kernel choice
# "auto" measures kernels on first use and caches its choices on disk (tinyseg/tuning.py).
# Tests must neither depend on timings nor write to the user's cache: tuning is off unless a
# test turns it on (ts.backend.set_tuning(True)), and the cache lives in a temporary folder.
import tempfile

os.environ["TINYSEG_TUNE"] = "0"
os.environ["TINYSEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinyseg-test-cache-")
