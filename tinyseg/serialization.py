"""Checkpoints: ``ts.save(obj, path)`` and ``ts.load(path)``, one .npz file, never pickle.

``obj`` is a (nested) dict with string keys whose values are arrays (NumPy, CuPy or
Tensors), Python numbers (ints of any size), strings, bools, None, and lists, tuples or
dicts of these. For example a training checkpoint:

    {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
     "config": {...}, "rng": ts.random.get_state()}

File layout: a standard NumPy .npz (zip) archive. Each array is one entry, named by its
path in the dict joined with "/" ("model/encoder.0.conv1.weight"). Everything else is
kept in one JSON document, stored as a string entry "__tinyseg__", which mirrors the
dict and points to the array entries. ``np.load(path, allow_pickle=False)`` can read
every entry, so loading a checkpoint never runs code from the file: a pickle can hide
arbitrary code, which is why object arrays are refused on save and on load.

Writing is atomic: the archive is written to a temporary file in the target's
directory, flushed and fsync'ed, then renamed over ``path`` (``os.replace``), so a crash
mid-write leaves either the old file or the new one, never a truncated one.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["save", "load", "first_non_finite", "require_finite"]

FORMAT = "tinyseg-checkpoint"
VERSION = 1
INDEX_ENTRY = "__tinyseg__"
SEPARATOR = "/"
# Markers inside the JSON document; user dicts may not use these keys.
ARRAY_MARKER = "__ndarray__"
TUPLE_MARKER = "__tuple__"
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")


# ----- save

def _describe(path_parts) -> str:
    return SEPARATOR.join(path_parts) if path_parts else "<root>"


def _encode(value, path_parts: tuple, arrays: dict):
    """``value`` as a JSON-ready tree; arrays go into ``arrays`` under their path."""
    where = _describe(path_parts)
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.generic) and not isinstance(value, (np.str_, np.bytes_, np.void)):
        value = value.item()                       # NumPy scalars become Python numbers
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"save: dict keys must be strings, got {key!r} ({type(key).__name__}) at {where!r}")
            if key in (ARRAY_MARKER, TUPLE_MARKER):
                raise ValueError(f"save: the key {key!r} at {where!r} is reserved by the checkpoint format")
            encoded[key] = _encode(item, path_parts + (key,), arrays)
        return encoded
    if isinstance(value, (list, tuple)):
        items = [_encode(item, path_parts + (str(i),), arrays) for i, item in enumerate(value)]
        return {TUPLE_MARKER: items} if isinstance(value, tuple) else items
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = backend.to_device(value, "cpu")
        if array.dtype.hasobject:
            raise TypeError(f"save: {where!r} is an object array (dtype {array.dtype}); checkpoints store numeric "
                            f"and string arrays only, because object arrays need pickle")
        # Entries are numbered rather than named after the keys: any string is then a valid
        # key (zip member names cannot hold every character, e.g. NUL), and no two keys can
        # collide. The JSON index maps each key path to its entry.
        entry = f"array_{len(arrays):06d}"
        arrays[entry] = array
        return {ARRAY_MARKER: entry}
    raise TypeError(f"save: {where!r} has type {type(value).__name__}; expected an array, Tensor, number, "
                    f"string, bool, None, or a list/tuple/dict of these")


def _write_npz(file, entries: dict) -> None:
    """Write ``entries`` (name -> array) as a .npz archive, the format np.savez writes.

    Written entry by entry rather than through ``np.savez(file, **entries)``, whose
    own keyword arguments would clash with entries named "file" or "allow_pickle".
    """
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in entries.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); not possible, nor needed, on Windows."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(obj: dict, path) -> None:
    """Write ``obj`` (a nested dict of arrays and plain values) to ``path`` as one .npz, atomically.

    The file is written exactly at ``path`` (no extension is added). Arrays come back
    from ``load`` as NumPy arrays (CuPy arrays and Tensors are saved by value), tuples
    as tuples, NumPy scalars as Python numbers.
    """
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict (e.g. {{'model': model.state_dict(), ...}}), "
                        f"got {type(obj).__name__}")
    path = os.fspath(path)
    arrays: dict = {}
    tree = _encode(obj, (), arrays)
    document = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree})
    entries = {INDEX_ENTRY: np.array(document), **arrays}

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: the directory {directory!r} of {path!r} does not exist")
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            _write_npz(file, entries)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _fsync_directory(directory)


# ----- load

def _not_a_checkpoint(path: str, found: str) -> ValueError:
    return ValueError(f"load: {path!r} is not a tinyseg checkpoint: expected a .npz (zip) archive written by "
                      f"tinyseg.save, {found}")


def _decode(node, arrays):
    if isinstance(node, list):
        return [_decode(item, arrays) for item in node]
    if isinstance(node, dict):
        if ARRAY_MARKER in node:
            return arrays(node[ARRAY_MARKER])
        if TUPLE_MARKER in node:
            return tuple(_decode(item, arrays) for item in node[TUPLE_MARKER])
        return {key: _decode(item, arrays) for key, item in node.items()}
    return node


def load(path) -> dict:
    """Read a checkpoint written by ``save``; arrays come back as NumPy arrays.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    tinyseg checkpoint (not a zip, truncated, a plain .npz, or holding pickled objects).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path!r}")
    if os.path.isdir(path):
        raise _not_a_checkpoint(path, "found a directory")
    with open(path, "rb") as file:
        signature = file.read(4)
    if signature not in _ZIP_SIGNATURES:
        found = "found an empty file" if not signature else f"found a file starting with {signature!r}"
        raise _not_a_checkpoint(path, found)

    try:
        with np.load(path, allow_pickle=False) as archive:
            if INDEX_ENTRY not in archive.files:
                shown = ", ".join(archive.files[:5]) + (", ..." if len(archive.files) > 5 else "")
                raise _not_a_checkpoint(path, f"found a .npz archive without the {INDEX_ENTRY!r} entry "
                                              f"(entries: {shown})")
            try:
                header = json.loads(str(archive[INDEX_ENTRY]))
            except (ValueError, TypeError) as error:
                raise _not_a_checkpoint(path, f"found an unreadable {INDEX_ENTRY!r} entry ({error})") from None
            if not isinstance(header, dict) or header.get("format") != FORMAT or "tree" not in header:
                raise _not_a_checkpoint(path, f"found a {INDEX_ENTRY!r} entry of another format")
            version = header.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                raise _not_a_checkpoint(path, f"found a {INDEX_ENTRY!r} entry without a format version")
            if version > VERSION:
                raise ValueError(f"load: {path!r} was written by a newer tinyseg (checkpoint format version "
                                 f"{version}, this version reads up to {VERSION})")

            def read_array(entry):
                if entry not in archive.files:
                    raise _not_a_checkpoint(path, f"found no entry {entry!r}, which the index refers to "
                                                  f"(a damaged file?)")
                try:
                    return archive[entry]
                except ValueError as error:
                    if "pickle" in str(error):
                        raise ValueError(f"load: {path!r}: entry {entry!r} holds pickled Python objects; tinyseg "
                                         f"never unpickles (a pickle can run arbitrary code)") from None
                    raise _not_a_checkpoint(path, f"found a damaged entry {entry!r} ({error})") from None

            return _decode(header["tree"], read_array)
    except (zipfile.BadZipFile, EOFError) as error:
        raise _not_a_checkpoint(path, f"found a damaged or truncated archive ({error})") from None


# ----- weights that are numbers

def first_non_finite(arrays: dict):
    """(name, description) of the first array in ``arrays`` (name -> array, in order) that
    holds NaN or ±Inf, e.g. ``("enc.0.conv1.weight", "3 NaN, 1 +Inf of 432 values")``; None when all are finite."""
    for name, value in arrays.items():
        value = value.data if isinstance(value, Tensor) else value
        array = np.asarray(backend.to_device(value, "cpu"))
        if not np.issubdtype(array.dtype, np.floating) or np.all(np.isfinite(array)):
            continue
        counts = [(int(np.isnan(array).sum()), "NaN"), (int(np.isposinf(array).sum()), "+Inf"),
                  (int(np.isneginf(array).sum()), "-Inf")]
        found = ", ".join(f"{n} {kind}" for n, kind in counts if n)
        return name, f"{found} of {array.size} values"
    return None


def require_finite(weights: dict, path) -> None:
    """Raise ValueError naming the first tensor of ``weights`` (a model state dict read from
    the checkpoint ``path``) that holds NaN or Inf: such a model predicts garbage silently
    (e.g. all-background masks), so it is refused at load."""
    bad = first_non_finite(weights)
    if bad is not None:
        name, found = bad
        raise ValueError(f"checkpoint {os.fspath(path)}: weight {name!r} holds {found}; expected finite numbers "
                         f"(the run that wrote it diverged: use an earlier checkpoint, e.g. best.npz, or retrain "
                         f"with a lower --lr)")
