"""The random state behind dropout, weight initialisation and data shuffling.

One seeded generator per process, so ``ts.manual_seed(s)`` makes a run repeatable.
Its state can be saved in a checkpoint (``get_state``/``set_state``) so that a resumed
run draws the same numbers as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np

from . import backend

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Seed tinyseg's generator (and CuPy's, when a GPU is in use)."""
    global _generator
    _generator = np.random.default_rng(seed)
    if backend._cupy is not None:
        backend._cupy.random.seed(seed)


def generator() -> np.random.Generator:
    return _generator


def get_state() -> dict:
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state


def random(shape, xp=np, dtype=np.float32):
    """Uniform [0, 1) numbers of ``shape`` on the device of ``xp``."""
    values = _generator.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return values if xp is np else xp.asarray(values)
