"""ts.save / ts.load: round trips of nested checkpoints, atomic writes, no pickle, clear errors."""
import json
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyseg as ts
from tinyseg import nn, serialization


def listing(directory):
    return sorted(os.listdir(directory))


def checkpoint():
    ts.manual_seed(0)
    generator = np.random.default_rng(12345)
    generator.random(7)                     # move the state away from the seed
    return {
        "model": nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).state_dict(),
        "epoch": 3,
        "lr": 1.5e-4,
        "done": False,
        "name": "unet-π",
        "nothing": None,
        "betas": (0.9, 0.999),
        "history": {"loss": [0.5, 0.25, float("nan")], "dice": []},
        "empty": {},
        "rng": generator.bit_generator.state,
        "huge": 2 ** 200 + 1,
        "arrays": {"f32": np.arange(6, dtype=np.float32).reshape(2, 3), "f64": np.array(np.pi),
                   "i64": np.array([-(2 ** 62), 2 ** 62]), "u8": np.array([0, 255], np.uint8),
                   "bool": np.array([True, False]), "text": np.array(["a", "bcd"]),
                   "transposed": np.arange(12.0).reshape(3, 4).T, "tensor": ts.Tensor(np.ones(2))},
        "list_of_arrays": [np.zeros(2), 1, "x"],
        "numpy_scalars": {"f": np.float32(0.5), "i": np.int64(7), "b": np.bool_(True)},
    }


def assert_same(loaded, original, where="root"):
    if isinstance(original, ts.Tensor):
        original = original.data
    if isinstance(original, np.generic):
        original = original.item()
    if isinstance(original, dict):
        assert isinstance(loaded, dict) and list(loaded) == list(original), where
        for key in original:
            assert_same(loaded[key], original[key], f"{where}/{key}")
    elif isinstance(original, (list, tuple)):
        assert type(loaded) is type(original) and len(loaded) == len(original), where
        for i, (a, b) in enumerate(zip(loaded, original)):
            assert_same(a, b, f"{where}/{i}")
    elif isinstance(original, np.ndarray):
        assert isinstance(loaded, np.ndarray) and loaded.dtype == original.dtype, where
        np.testing.assert_array_equal(loaded, original, err_msg=where)
    elif isinstance(original, float) and np.isnan(original):
        assert np.isnan(loaded), where
    else:
        assert type(loaded) is type(original) and loaded == original, where


def test_round_trip_of_a_nested_checkpoint(tmp_path):
    original = checkpoint()
    path = tmp_path / "run.npz"
    ts.save(original, path)
    assert listing(tmp_path) == ["run.npz"]
    assert_same(ts.load(path), original)


def test_big_ints_of_the_generator_state_round_trip_exactly(tmp_path):
    generator = np.random.default_rng(2024)
    generator.standard_normal(5)
    state = generator.bit_generator.state
    assert state["state"]["state"] > 2 ** 64                 # a 128-bit integer
    ts.save({"rng": state}, tmp_path / "rng.npz")
    restored = np.random.default_rng()
    restored.bit_generator.state = ts.load(tmp_path / "rng.npz")["rng"]
    np.testing.assert_array_equal(restored.random(10), generator.random(10))


def test_the_file_is_a_plain_npz_readable_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    ts.save({"model": {"down.0.weight": np.ones(3)}, "file": np.zeros(1), "allow_pickle": np.ones(1)}, path)
    with np.load(path, allow_pickle=False) as archive:
        assert len(archive.files) == 4 and "__tinyseg__" in archive.files
        index = json.loads(str(archive["__tinyseg__"]))
        assert index["format"] == "tinyseg-checkpoint"
        entry = index["tree"]["model"]["down.0.weight"]["__ndarray__"]
        np.testing.assert_array_equal(archive[entry], np.ones(3))


def test_keys_that_look_like_paths_or_hold_odd_characters_round_trip(tmp_path):
    original = {"a/b": np.ones(1), "a": {"b": np.zeros(1)}, "nul\x00key": np.full(2, 3.0), "é 🙂": np.arange(2)}
    ts.save(original, tmp_path / "k.npz")
    loaded = ts.load(tmp_path / "k.npz")
    assert set(loaded) == set(original)
    np.testing.assert_array_equal(loaded["a/b"], np.ones(1))
    np.testing.assert_array_equal(loaded["a"]["b"], np.zeros(1))
    np.testing.assert_array_equal(loaded["nul\x00key"], np.full(2, 3.0))


def test_a_model_round_trips_through_a_checkpoint(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(2, 2))
    model[1].running_mean.data[...] = [1, 2, 3]
    ts.save({"model": model.state_dict()}, str(tmp_path / "m.npz"))
    other = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(2, 2))
    other.load_state_dict(ts.load(str(tmp_path / "m.npz"))["model"])
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)


keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/"), min_size=1, max_size=6)
arrays = st.builds(lambda shape, dtype, seed: (np.random.default_rng(seed).standard_normal(shape) * 100).astype(dtype),
                   st.lists(st.integers(0, 3), max_size=3).map(tuple),
                   st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_]),
                   st.integers(0, 100))
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5) | arrays
values = st.recursive(leaves, lambda children: st.lists(children, max_size=3)
                      | st.lists(children, max_size=3).map(tuple)
                      | st.dictionaries(keys.filter(lambda k: not k.startswith("__")), children, max_size=3),
                      max_leaves=10)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(keys.filter(lambda k: not k.startswith("__")), values, max_size=4))
def test_round_trip_of_random_nested_values(original):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "c.npz")
        ts.save(original, path)
        assert_same(ts.load(path), original)


# ----- atomic writes

def test_a_failing_rename_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    ts.save({"epoch": 1}, path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        ts.save({"epoch": 2, "w": np.ones(1000)}, path)
    assert listing(tmp_path) == ["ckpt.npz"]
    assert ts.load(path) == {"epoch": 1}


def test_a_crash_in_the_middle_of_writing_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    ts.save({"epoch": 1}, path)
    write_array = np.lib.format.write_array
    written = []

    def crash_on_second_entry(file, array, **kwargs):
        if written:
            raise KeyboardInterrupt        # e.g. the user pressed Ctrl-C mid-write
        written.append(True)
        write_array(file, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", crash_on_second_entry)
    with pytest.raises(KeyboardInterrupt):
        ts.save({"epoch": 2, "a": np.ones(10), "b": np.ones(10)}, path)
    assert listing(tmp_path) == ["ckpt.npz"]
    assert ts.load(path) == {"epoch": 1}


def test_the_written_file_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    ts.save({"x": np.ones(3)}, tmp_path / "c.npz")
    assert events[:2] == ["fsync", "replace"]


def test_save_keeps_the_mode_of_an_existing_file(tmp_path):
    path = tmp_path / "c.npz"
    ts.save({"a": 1}, path)
    os.chmod(path, 0o640)
    ts.save({"a": 2}, path)
    assert os.stat(path).st_mode & 0o777 == 0o640


# ----- never pickle

def test_object_arrays_are_refused_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match="'model/bad' is an object array"):
        ts.save({"model": {"bad": np.array([{"a": 1}], dtype=object)}}, tmp_path / "c.npz")
    assert listing(tmp_path) == []


class Exploit:
    ran = False

    def __reduce__(self):
        return (Exploit.mark, ())

    @staticmethod
    def mark():
        Exploit.ran = True
        return "pwned"


def test_a_crafted_pickled_entry_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.npz"
    index = json.dumps({"format": "tinyseg-checkpoint", "version": 1, "tree": {"w": {"__ndarray__": "w"}}})
    np.savez(path, __tinyseg__=np.array(index), w=np.array([Exploit()], dtype=object))
    with pytest.raises(ValueError, match="entry 'w' holds pickled Python objects"):
        ts.load(path)
    assert not Exploit.ran


# ----- bad files and bad values

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="load: no such file: .*nothing.npz"):
        ts.load(tmp_path / "nothing.npz")


@pytest.mark.parametrize("content,found", [(b"", "an empty file"), (b"epoch,loss\n1,0.5\n", "starting with"),
                                           (b"\x80\x04\x95pickle", "starting with")])
def test_a_file_that_is_not_an_archive(tmp_path, content, found):
    path = tmp_path / "notes.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"'{path}' is not a tinyseg checkpoint: expected a .npz .* {found}"):
        ts.load(path)


def test_a_plain_npz_and_a_truncated_checkpoint(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.ones(3))
    with pytest.raises(ValueError, match="without the '__tinyseg__' entry"):
        ts.load(plain)
    whole = tmp_path / "whole.npz"
    ts.save({"w": np.ones(10000)}, whole)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:30000])
    with pytest.raises(ValueError, match="cut.npz' is not a tinyseg checkpoint.*damaged or truncated"):
        ts.load(cut)
    with pytest.raises(ValueError, match="found a directory"):
        ts.load(tmp_path)


def test_a_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "new.npz"
    np.savez(path, __tinyseg__=np.array(json.dumps({"format": "tinyseg-checkpoint", "version": 99, "tree": {}})))
    with pytest.raises(ValueError, match="written by a newer tinyseg"):
        ts.load(path)
    np.savez(path, __tinyseg__=np.array(json.dumps({"format": "tinyseg-checkpoint", "tree": {}})))
    with pytest.raises(ValueError, match="without a format version"):
        ts.load(path)


@pytest.mark.parametrize("obj,error,match", [
    ({1: np.ones(1)}, TypeError, "dict keys must be strings, got 1"),
    ({"a": {"b": {1, 2}}}, TypeError, "'a/b' has type set"),
    ({"a": {"__ndarray__": 1}}, ValueError, "reserved by the checkpoint format"),
    ([np.ones(1)], TypeError, "save: expected a dict"),
])
def test_values_that_cannot_be_saved(tmp_path, obj, error, match):
    with pytest.raises(error, match=match):
        ts.save(obj, tmp_path / "c.npz")
    assert listing(tmp_path) == []


def test_saving_into_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ts.save({"a": 1}, tmp_path / "missing" / "c.npz")


def test_ts_save_and_load_are_the_serialization_functions():
    assert ts.save is serialization.save and ts.load is serialization.load
