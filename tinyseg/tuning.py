"""Measured kernel choice: "auto" runs, per op and shape class, the kernel measured fastest *here*.

Which kernel is fastest depends on the machine: the same 16-channel 3×3 convolution is
won by im2col on one CPU and by Winograd on another, and the crossing points move with
the vector width, the caches, the BLAS build and the thread count. So instead of
constants measured on one machine, "auto" asks the tuner:

* On first use of a *decision* (op, primitive, shape class, dtype), every candidate
  kernel runs the very call at hand: one untimed warm-up call each (Numba compiles or
  loads its cache, work buffers grow), then timed rounds, every candidate once per
  round, until ``budget_s`` (50 ms) is spent — at least one round, at most
  ``max_repeats``. The median wins; ties go to the first candidate.
* The choice is kept in memory and in a JSON file per machine,
  ``$TINYSEG_CACHE_DIR/tuning/<key>.json`` (default ``~/.cache/tinyseg/tuning``),
  written atomically (a temporary file, then ``os.replace``) and merged with what other
  processes wrote meanwhile. ``<key>`` hashes what the choice depends on:
  ``machine_key()`` — CPU model, instruction-set flags, thread counts, and the versions
  of NumPy (with its BLAS core), Numba, Python and tinyseg's kernel sources.
* A choice measured while the machine is busy (1-minute load average above 1.5× the
  cores available: other processes then distort every timing, measured on a shared VM at
  load 13–18 on 2 cores: a 3 ms convolution read 270 ms) holds for this process only
  and is not written: a later, quieter process measures again.
* ``tinyseg bench --tune`` fills the cache ahead of time for the benchmark U-Nets
  (whatever the load: run it when the machine is quiet).
* Off switch: ``TINYSEG_TUNE=0`` in the environment, or ``ts.backend.set_tuning(False)``;
  "auto" then applies its fixed rules (thresholds measured on the first machine).

Every candidate is tested equal to ``tinyseg/reference.py``, so the choice changes the
speed, not the result (beyond float rounding). The tests turn tuning off by default
(tests/conftest.py), so the suite does not depend on timings.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

# The flags of /proc/cpuinfo that decide which code the compilers and the BLAS emit.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
             "asimd", "sve", "sve2")

BUDGET_S = 0.05
MAX_REPEATS = 5
BUSY_LOAD_PER_CORE = 1.5

_enabled: bool | None = None        # None: read TINYSEG_TUNE on first ask


def enabled() -> bool:
    """Whether "auto" measures its choices (TINYSEG_TUNE unset or not "0", unless ``set_enabled`` said otherwise)."""
    if _enabled is None:
        return os.environ.get("TINYSEG_TUNE", "1").strip().lower() not in ("0", "false", "no", "off")
    return _enabled


def set_enabled(flag: bool | None) -> None:
    """Turn measured choice on or off for this process (None: follow TINYSEG_TUNE again)."""
    global _enabled
    _enabled = None if flag is None else bool(flag)


def cache_dir() -> Path:
    """$TINYSEG_CACHE_DIR/tuning, else $XDG_CACHE_HOME/tinyseg/tuning, else ~/.cache/tinyseg/tuning."""
    if os.environ.get("TINYSEG_CACHE_DIR"):
        return Path(os.environ["TINYSEG_CACHE_DIR"]) / "tuning"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tinyseg" / "tuning"


def cpu_description(cpuinfo_path="/proc/cpuinfo") -> tuple[str, list[str]]:
    """(CPU model name, the ISA_FLAGS it has), from /proc/cpuinfo; platform's name elsewhere."""
    model, flags = "", set()
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("model name", "Processor", "CPU part") and not model:
                    model = value.strip()
                elif name in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), [f for f in ISA_FLAGS if f in flags]


_static_key: dict | None = None


def _sources_digest() -> str:
    """A short hash of the op and kernel sources: a changed kernel must be measured again."""
    digest = hashlib.sha256()
    folder = Path(__file__).parent / "functional"
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_key(threads: dict | None = None) -> dict:
    """What a measured choice depends on: CPU, ISA flags, thread counts, library versions."""
    return machine_key_and_name(threads)[0]


_machine_keys: dict = {}       # thread counts -> (key, key name)
_current = [None, -math.inf]   # the key for the current thread counts, and when they were read

# Thread counts are re-read at most this often (seconds): a tuned call asks for the key
# every time, and reading them costs microseconds (Numba's count is a call into its pool).
COUNTS_MAX_AGE_S = 0.5


def machine_key_and_name(threads: dict | None = None) -> tuple[dict, str]:
    if threads is None:
        now = time.monotonic()
        if now - _current[1] <= COUNTS_MAX_AGE_S:
            return _current[0]
        from . import threads as thread_control
        _current[:] = [machine_key_and_name(thread_control.counts()), now]
        return _current[0]
    counts = tuple(sorted(threads.items()))
    found = _machine_keys.get(counts)
    if found is None:
        key = {**_static_machine_key(), "threads": dict(threads)}
        found = _machine_keys[counts] = (key, key_name(key))
    return found


def _static_machine_key() -> dict:
    global _static_key
    if _static_key is None:
        import numpy as np
        from . import __version__, threads as thread_control
        model, flags = cpu_description()
        try:
            import numba
            numba_version = numba.__version__
        except ImportError:
            numba_version = None
        _static_key = {"cpu": model, "isa": flags, "machine": platform.machine(), "python": platform.python_version(),
                       "numpy": np.__version__, "blas": thread_control.blas_core(), "numba": numba_version,
                       "tinyseg": __version__, "sources": _sources_digest()}
    return _static_key


def key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class Tuner:
    """Measures and remembers which candidate kernel is fastest per decision.

    ``clock`` (seconds, monotonic) and ``directory`` can be injected (tests); ``decisions``
    holds, per decision, the winner and the medians measured (ms) or read from the cache.
    """

    def __init__(self, directory=None, clock=time.perf_counter, budget_s=BUDGET_S, max_repeats=MAX_REPEATS,
                 key=None, load_per_core=None, store_when_busy=False):
        self.directory, self.clock, self.budget_s, self.max_repeats = directory, clock, budget_s, max_repeats
        self.load_per_core = load_per_core or _load_per_core
        self.store_when_busy = store_when_busy
        self.key = key                  # None: machine_key() at each decision (thread counts may change)
        self.decisions: dict[str, dict] = {}
        self._files: dict[str, dict] = {}      # key name -> {decision: entry} read from disk
        self.measured = 0                      # decisions measured in this process (not read from the cache)

    def path(self, key: dict) -> Path:
        return Path(self.directory or cache_dir()) / f"{key_name(key)}.json"

    def choose(self, op: str, decision: str, candidates: dict) -> str:
        """The name of the fastest of ``candidates`` ({name: zero-argument callable}) for ``decision``."""
        names = list(candidates)
        if len(names) == 1:
            return names[0]
        key, name = (self.key, key_name(self.key)) if self.key else machine_key_and_name()
        full = f"{name}/{op}/{decision}"
        entry = self.decisions.get(full)
        if entry is None:
            stored = self._stored(key).get(f"{op}/{decision}")
            if stored is not None and stored.get("winner") in candidates:
                entry = stored
            else:
                load = self.load_per_core()
                times = self.measure(candidates)
                entry = {"winner": min(names, key=lambda n: (times[n], names.index(n))),
                         "ms": {n: round(1000 * t, 4) for n, t in times.items()}, "load_per_core": round(load, 2)}
                self.measured += 1
                if load <= BUSY_LOAD_PER_CORE or self.store_when_busy:
                    self._store(key, f"{op}/{decision}", entry)
            self.decisions[full] = entry
        return entry["winner"]

    def measure(self, candidates: dict) -> dict:
        """Median seconds per candidate: a warm-up call each, then rounds until the budget is spent."""
        for run in candidates.values():
            run()
        samples = {name: [] for name in candidates}
        start = self.clock()
        for _ in range(self.max_repeats):
            for name, run in candidates.items():
                t0 = self.clock()
                run()
                samples[name].append(self.clock() - t0)
            if self.clock() - start >= self.budget_s:
                break
        return {name: statistics.median(s) for name, s in samples.items()}

    def _stored(self, key: dict) -> dict:
        name = key_name(key)
        if name not in self._files:
            self._files[name] = self._read(self.path(key)).get("choices", {})
        return self._files[name]

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            with open(path) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}        # absent or half-written by a crashed process: measure again

    def _store(self, key: dict, decision: str, entry: dict) -> None:
        """Add one decision to the key's file: re-read (other processes may have added some), write atomically."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            choices = self._read(path).get("choices", {})
            choices[decision] = entry
            self._files[key_name(key)] = choices
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(handle, "w") as f:
                json.dump({"key": key, "choices": choices}, f, indent=1, sort_keys=True)
            os.replace(temporary, path)
        except OSError:
            pass             # a read-only home: the choice still holds for this process

    def clear(self) -> None:
        """Forget every choice held in memory (the files stay)."""
        self.decisions.clear()
        self._files.clear()
        self.measured = 0


def _load_per_core() -> float:
    """The 1-minute load average per core available (0 where the system does not say)."""
    from . import threads
    try:
        return os.getloadavg()[0] / threads.available_cores()
    except (AttributeError, OSError):
        return 0.0


TUNER = Tuner()


def pixels_class(count: int) -> str:
    """A shape class of a pixel or element count: its base-2 logarithm rounded to half an octave."""
    return f"2^{round(2 * math.log2(max(count, 1))) / 2:g}"
