"""Measured kernel choice (tinyseg/tuning.py): the cache, its key, the off switch, the time bound,
and the same results whichever kernel wins. No test here depends on real timings: clocks and
measurements are injected."""
import json
import os

import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend, reference, threads, tuning
from tinyseg.functional import conv


class FakeClock:
    """A clock that each candidate advances by its own cost (seconds) when it runs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def candidate(self, cost, calls, name):
        def run():
            calls.append(name)
            self.now += cost
        return run


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """Every Tuner made here sees an idle machine unless a test says otherwise (the real load varies)."""
    monkeypatch.setattr(tuning, "_load_per_core", lambda: 0.0)


@pytest.fixture
def key():
    return {"cpu": "Test CPU", "isa": ["avx2"], "threads": {"cores": 2, "blas": 2, "numba": 2}, "numpy": "x"}


def test_the_fastest_candidate_wins_and_is_cached_on_disk(tmp_path, key):
    clock, calls = FakeClock(), []
    tuner = tuning.Tuner(directory=tmp_path, clock=clock, key=key, load_per_core=lambda: 0.5)
    runs = {"slow": clock.candidate(0.003, calls, "slow"), "fast": clock.candidate(0.001, calls, "fast")}
    assert tuner.choose("conv2d", "forward C16", runs) == "fast"
    assert tuner.measured == 1
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"{tuning.key_name(key)}.json"]        # no temporary file left
    data = json.loads(files[0].read_text())
    assert data["key"] == key
    entry = data["choices"]["conv2d/forward C16"]
    assert entry["winner"] == "fast" and entry["ms"] == {"slow": 3.0, "fast": 1.0} and entry["load_per_core"] == 0.5

    # Later calls in the process, and a new process (a new Tuner), read the choice without measuring.
    calls.clear()
    assert tuner.choose("conv2d", "forward C16", runs) == "fast"
    fresh = tuning.Tuner(directory=tmp_path, clock=clock, key=key, load_per_core=lambda: 0.5)
    assert fresh.choose("conv2d", "forward C16", runs) == "fast"
    assert calls == [] and fresh.measured == 0


def test_a_choice_measured_on_a_busy_machine_is_not_written(tmp_path, key):
    clock, calls = FakeClock(), []
    runs = {"a": clock.candidate(0.002, calls, "a"), "b": clock.candidate(0.001, calls, "b")}
    busy = tuning.Tuner(directory=tmp_path, clock=clock, key=key, load_per_core=lambda: 8.0)
    assert busy.choose("op", "d", runs) == "b" and busy.choose("op", "d", runs) == "b"
    assert busy.measured == 1 and not list(tmp_path.iterdir())         # held for this process only
    forced = tuning.Tuner(directory=tmp_path, clock=clock, key=key, load_per_core=lambda: 8.0, store_when_busy=True)
    forced.choose("op", "d", runs)
    assert json.loads(forced.path(key).read_text())["choices"]["op/d"]["load_per_core"] == 8.0


def test_choices_of_other_processes_are_kept_when_writing(tmp_path, key):
    clock, calls = FakeClock(), []
    first, second = (tuning.Tuner(directory=tmp_path, clock=clock, key=key) for _ in range(2))
    runs = {"a": clock.candidate(0.001, calls, "a"), "b": clock.candidate(0.002, calls, "b")}
    first.choose("relu", "one", runs)
    second.choose("relu", "two", runs)
    choices = json.loads(tuning.Tuner(directory=tmp_path, key=key).path(key).read_text())["choices"]
    assert set(choices) == {"relu/one", "relu/two"}


def test_a_different_key_measures_again(tmp_path, key):
    clock, calls = FakeClock(), []
    runs = {"a": clock.candidate(0.001, calls, "a"), "b": clock.candidate(0.002, calls, "b")}
    tuning.Tuner(directory=tmp_path, clock=clock, key=key).choose("op", "d", runs)
    other = tuning.Tuner(directory=tmp_path, clock=clock, key={**key, "threads": {"cores": 1}})
    other.choose("op", "d", runs)
    assert other.measured == 1 and len(list(tmp_path.iterdir())) == 2


def test_a_corrupt_cache_file_is_measured_again_and_replaced(tmp_path, key):
    clock, calls = FakeClock(), []
    tuner = tuning.Tuner(directory=tmp_path, clock=clock, key=key)
    tuner.path(key).write_text('{"choices": {"op/d": {"winn')
    assert tuner.choose("op", "d", {"a": clock.candidate(0.002, calls, "a"),
                                    "b": clock.candidate(0.001, calls, "b")}) == "b"
    assert json.loads(tuner.path(key).read_text())["choices"]["op/d"]["winner"] == "b"


def test_a_cached_winner_that_is_no_longer_a_candidate_is_measured_again(tmp_path, key):
    clock, calls = FakeClock(), []
    tuner = tuning.Tuner(directory=tmp_path, clock=clock, key=key)
    tuner.choose("op", "d", {"gone": clock.candidate(0.001, calls, "gone"), "b": clock.candidate(0.002, calls, "b")})
    fresh = tuning.Tuner(directory=tmp_path, clock=clock, key=key)
    assert fresh.choose("op", "d", {"a": clock.candidate(0.002, calls, "a"),
                                    "b": clock.candidate(0.001, calls, "b")}) == "b"


@pytest.mark.parametrize("cost, rounds", [(0.1, 1), (0.02, 2), (0.001, 5)])
def test_the_measurement_is_bounded_in_time(tmp_path, key, cost, rounds):
    """One warm-up call per candidate, then rounds until 50 ms are spent (at least 1, at most 5)."""
    clock, calls = FakeClock(), []
    tuner = tuning.Tuner(directory=tmp_path, clock=clock, key=key, budget_s=0.05, max_repeats=5)
    tuner.choose("op", "d", {"a": clock.candidate(cost, calls, "a"), "b": clock.candidate(cost, calls, "b")})
    assert calls.count("a") == calls.count("b") == 1 + rounds
    timed = clock.now - 2 * cost                    # after the warm-up
    assert timed <= max(tuner.budget_s + 2 * cost, 2 * cost)


def test_one_candidate_is_never_measured(tmp_path, key):
    calls = []
    tuner = tuning.Tuner(directory=tmp_path, key=key)
    assert tuner.choose("op", "d", {"only": lambda: calls.append(1)}) == "only"
    assert calls == [] and not list(tmp_path.iterdir())


def test_machine_key_names_cpu_isa_threads_and_versions():
    key = tuning.machine_key()
    for field in ("cpu", "isa", "threads", "numpy", "numba", "python", "tinyseg", "sources", "blas"):
        assert field in key
    assert key["tinyseg"] == ts.__version__ and key["numpy"] == np.__version__
    assert set(key["threads"]) == {"cores", "blas", "numba"}
    assert json.loads(json.dumps(key)) == key                  # storable as is


def test_cpu_description_reads_model_and_isa_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f "
                    "avx512bw vmx\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    model, flags = tuning.cpu_description(str(info))
    assert model == "AMD EPYC 9R14"
    assert flags == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw"]


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYSEG_CACHE_DIR", str(tmp_path))
    assert tuning.cache_dir() == tmp_path / "tuning"
    monkeypatch.delenv("TINYSEG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tuning.cache_dir() == tmp_path / "xdg" / "tinyseg" / "tuning"


def test_tests_run_with_tuning_off_and_a_temporary_cache():
    assert os.environ["TINYSEG_TUNE"] == "0" and not tuning.enabled()
    assert not str(tuning.cache_dir()).startswith(os.path.expanduser("~/.cache"))


@pytest.fixture
def tuner(tmp_path, monkeypatch):
    """tuning on, with a fresh Tuner writing under tmp_path; restored afterwards."""
    fresh = tuning.Tuner(directory=tmp_path)
    monkeypatch.setattr(tuning, "TUNER", fresh)
    backend.set_tuning(True)
    yield fresh
    backend.set_tuning(None)


def test_switches(monkeypatch):
    monkeypatch.setenv("TINYSEG_TUNE", "1")
    assert tuning.enabled() and backend.tuning_enabled()
    backend.set_tuning(False)
    try:
        assert not tuning.enabled()
    finally:
        backend.set_tuning(None)
    monkeypatch.setenv("TINYSEG_TUNE", "0")
    assert not backend.tuning_enabled()


def _conv_case(rng, N=2, C=16, O=8, size=10):
    x = rng.standard_normal((N, C, size, size))
    w = rng.standard_normal((O, C, 3, 3)) * 0.2
    b = rng.standard_normal(O)
    dy = rng.standard_normal((N, O, size, size))
    return x, w, b, dy


def _conv_with_grads(x, w, b, dy, **kwargs):
    xt, wt, bt = (ts.Tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.conv2d(xt, wt, bt, **kwargs)
    y.backward(dy)
    return y.numpy(), xt.grad, wt.grad, bt.grad


def test_tuning_off_measures_nothing(tmp_path, monkeypatch):
    fresh = tuning.Tuner(directory=tmp_path)
    monkeypatch.setattr(tuning, "TUNER", fresh)
    x, w, b, dy = _conv_case(np.random.default_rng(0))
    _conv_with_grads(x, w, b, dy, padding=1)
    assert fresh.decisions == {} and not list(tmp_path.iterdir())


def test_auto_tunes_each_primitive_among_cpu_kernels_only(tuner):
    x, w, b, dy = _conv_case(np.random.default_rng(1))
    _conv_with_grads(x, w, b, dy, padding=1)
    primitives = sorted(d.split("/")[2].split()[0] for d in tuner.decisions)
    assert primitives == ["forward", "input_grad", "weight_grad"]
    kernels = {"im2col", "numba-im2col", "winograd", "direct"}
    for entry in tuner.decisions.values():
        assert set(entry["ms"]) == kernels      # never a GPU kernel
    assert tuner.measured == 3


@pytest.mark.parametrize("winner", ["im2col", "numba-im2col", "winograd", "direct"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_results_are_the_same_whichever_kernel_wins(tuner, monkeypatch, winner, dtype):
    """Every primitive made to pick ``winner``: forward and gradients equal the reference (float rounding)."""
    monkeypatch.setattr(tuner, "measure", lambda runs: {n: 0.0 if n == winner else 1.0 for n in runs})
    blas_before = threads.blas_threads()
    x, w, b, dy = (a.astype(dtype) for a in _conv_case(np.random.default_rng(2)))
    y, dx, dw, db = _conv_with_grads(x, w, b, dy, padding=1)
    assert {e["winner"] for e in tuner.decisions.values()} == {winner}
    assert threads.blas_threads() == blas_before                  # the GEMMs' blas_limit(1) restores the count
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    np.testing.assert_allclose(y, reference.conv2d(x64, w64, b64, padding=1), **tolerance)
    with backend.use_kernel("conv2d", "im2col"):
        _, dx_ref, dw_ref, db_ref = _conv_with_grads(x64, w64, b64, dy64, padding=1)
    np.testing.assert_allclose(dx, dx_ref, **tolerance)
    np.testing.assert_allclose(dw, dw_ref, **tolerance)
    np.testing.assert_allclose(db, db_ref, **tolerance)


def test_strided_and_pointwise_convolutions_have_one_candidate(tuner):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 9, 9))
    y, dx, dw, _ = _conv_with_grads(x, rng.standard_normal((3, 4, 3, 3)), rng.standard_normal(3),
                                    rng.standard_normal((1, 3, 4, 4)), stride=2)
    _conv_with_grads(x, rng.standard_normal((3, 4, 1, 1)), rng.standard_normal(3), rng.standard_normal((1, 3, 9, 9)))
    measured = {d.split("/")[2].split()[0] for d in tuner.decisions}
    assert "input_grad" not in measured                # strided dX: col2im in every kernel
    assert all(" k1x1 " not in d for d in tuner.decisions)
    assert all("winograd" not in e["ms"] for e in tuner.decisions.values())     # stride 2: no Winograd


def test_winograd_is_no_candidate_when_its_kernel_would_not_fit_half_a_block():
    geometry = conv._ConvGeometry.for_conv2d((16, 16), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    assert "winograd" in conv._tuning_candidates(geometry, "forward", 64, 64, 4)
    assert "winograd" not in conv._tuning_candidates(geometry, "forward", 1024, 1024, 4)


def test_direct_convolution_is_a_candidate_for_stride_1_layers_up_to_its_widths():
    geometry = conv._ConvGeometry.for_conv2d((16, 16), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    strided = conv._ConvGeometry.for_conv2d((16, 16), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    for primitive in ("forward", "input_grad", "weight_grad"):
        assert "direct" in conv._tuning_candidates(geometry, primitive, 16, 32, 4)
        assert "direct" in conv._tuning_candidates(geometry, primitive, 256, 128, 4)
        assert "direct" not in conv._tuning_candidates(geometry, primitive, 1024, 16, 4)
    assert "direct" not in conv._tuning_candidates(strided, "forward", 16, 16, 4)


@pytest.mark.parametrize("winner", ["numpy", "numba"])
def test_relu_is_tuned_per_primitive_and_gives_the_same_results(tuner, monkeypatch, winner):
    monkeypatch.setattr(tuner, "measure", lambda runs: {n: 0.0 if n == winner else 1.0 for n in runs})
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 32, 32)).astype(np.float32)         # 2^13 elements
    b = rng.standard_normal(4).astype(np.float32)
    xt = ts.Tensor(x, requires_grad=True)
    y = F.relu(xt)
    y.backward(np.ones_like(x))
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
    np.testing.assert_array_equal(xt.grad, (x > 0).astype(np.float32))
    from tinyseg.functional import activation
    np.testing.assert_array_equal(activation.AutoReluKernel.forward_with_bias(x, b, np),
                                  np.maximum(x + b.reshape(1, -1, 1, 1), 0))
    decisions = {d.split("/", 1)[1]: e for d, e in tuner.decisions.items()}
    assert {d.split()[0] for d in decisions} == {"relu/forward", "relu/backward", "relu/forward_with_bias"}
    assert all(set(e["ms"]) == {"numpy", "numba"} and e["winner"] == winner for e in decisions.values())


def test_small_relus_are_not_measured(tuner):
    F.relu(ts.Tensor(np.ones((4, 4), np.float32)))
    assert tuner.decisions == {}
