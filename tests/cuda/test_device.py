"""tinyseg on the "cuda" device: tensors, modules, optimizers, checkpoints and the command line.

On a GPU machine these run with the real CuPy. Elsewhere they run with the CuPy
stand-in of tests/gpu_standin.py (device arrays in host memory, kernels/*.cu through the
host emulation), which exercises every line of the device path except the hardware.
"""
import json

import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend, cli, cuda

from .. import gpu_standin


def _real_gpu():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


REAL_GPU = _real_gpu()


@pytest.fixture
def device(monkeypatch):
    """'cuda', backed by the real CuPy when a GPU is here, else by the stand-in."""
    if not REAL_GPU:
        monkeypatch.setattr(backend, "_cupy", gpu_standin.build())
        # The GPU's conv "auto" times every candidate on first use of a shape: emulated, that
        # is seconds per layer, and the stand-in's times say nothing of a GPU. Here it
        # ranks them without running (tests/functional/test_conv_cuda.py tests the choice).
        from tinyseg.functional import conv_kernels_cuda
        rank = {name: i for i, name in enumerate(conv_kernels_cuda.GPU_AUTO_CANDIDATES)}
        monkeypatch.setattr(conv_kernels_cuda, "cuda_event_timer", lambda name, run: float(rank[name]))
        yield "cuda"
        for key in [k for k in cuda._modules if k[1]]:      # modules built by the stand-in
            del cuda._modules[key]
    else:
        yield "cuda"


def small_unet(seed=0):
    ts.manual_seed(seed)
    return ts.models.UNet(in_channels=1, out_channels=1, base_channels=4, depth=2)


def test_tensor_to_cuda_and_back(device):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = ts.Tensor(x, requires_grad=True).to(device)
    assert t.device == "cuda" and t.requires_grad
    assert t.to("cuda") is t
    back = t.to("cpu")
    assert back.device == "cpu" and type(back.data) is np.ndarray
    np.testing.assert_array_equal(back.data, x)


def test_mixing_devices_in_one_op_is_a_clear_error(device):
    a = ts.Tensor(np.ones(3, np.float32)).to(device)
    with pytest.raises(TypeError, match="cannot mix NumPy \\(cpu\\) and CuPy \\(cuda\\) arrays"):
        a + ts.Tensor(np.ones(3, np.float32))


def test_unet_step_on_the_device_matches_the_cpu(device):
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 16, 16)).astype(np.float32)
    target = (rng.random((2, 1, 16, 16)) > 0.5).astype(np.float32)

    def step(model, dev):
        optimizer = ts.optim.Adam(model.parameters(), lr=1e-2)
        loss = F.binary_cross_entropy_with_logits(model(ts.Tensor(x).to(dev)), backend.to_device(target, dev))
        loss.backward()
        optimizer.step()
        return float(backend.to_device(loss.data, "cpu")), [backend.to_device(p.data, "cpu")
                                                              for p in model.parameters()]

    loss_cpu, weights_cpu = step(small_unet(), "cpu")
    model = small_unet().to(device)
    assert all(p.device == "cuda" for p in model.parameters() + model.buffers())
    with backend.cuda_emulation() as records:
        loss_gpu, weights_gpu = step(model, device)
    assert abs(loss_gpu - loss_cpu) < 1e-5
    for a, b in zip(weights_gpu, weights_cpu):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The "auto" kernels on device arrays launched hand-written CUDA C.
    assert "bias_relu_forward<float>" in records.kernels() and "relu_backward<float>" in records.kernels()
    assert {launch.where for launch in records.launches} == {"gpu"}


def test_checkpoint_of_a_device_model_loads_on_the_cpu_and_saving_does_not_move_it(device, tmp_path):
    model = small_unet().to(device)
    ts.save(model.state_dict(), tmp_path / "model.npz")
    assert all(p.device == "cuda" for p in model.parameters())
    reloaded = small_unet(seed=1)
    reloaded.load_state_dict(ts.load(tmp_path / "model.npz"))
    for a, b in zip(reloaded.parameters(), model.parameters()):
        assert a.device == "cpu"
        np.testing.assert_array_equal(a.data, backend.to_device(b.data, "cpu"))


def test_optimizer_state_moves_with_the_model(device):
    model = small_unet()
    optimizer = ts.optim.Adam(model.parameters(), lr=1e-3)
    model(ts.Tensor(np.ones((1, 1, 8, 8), np.float32))).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    model.to(device)
    optimizer2 = ts.optim.Adam(model.parameters(), lr=1e-3)
    optimizer2.load_state_dict(state)
    for p in model.parameters():
        p.grad = backend.to_device(np.ones(p.shape, np.float32), device)
    optimizer2.step()
    assert all(p.device == "cuda" for p in model.parameters())


def test_cli_train_evaluate_predict_on_the_device(device, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "--device", device, "--epochs", "1", "--batch-size", "2", "--image-size", "16",
                     "--base-channels", "4", "--depth", "2", "--synthetic-count", "6", "--no-progress",
                     "--out", str(run)])
    assert code == 0, capsys.readouterr().err
    checkpoint = run / "best.npz"
    assert checkpoint.exists()
    data = tmp_path / "data"
    Image = pytest.importorskip("PIL.Image")
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:11, 3:12] = 1
        image = (mask * 150 + rng.integers(0, 60, (16, 16))).astype(np.uint8)
        Image.fromarray(image).save(data / "images" / f"{i}.png")
        Image.fromarray(mask * 255).save(data / "masks" / f"{i}.png")
    assert cli.main(["evaluate", "--device", device, "--checkpoint", str(checkpoint), "--data", str(data),
                     "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    assert "dice" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert cli.main(["predict", "--device", device, "--checkpoint", str(checkpoint), str(data / "images"),
                     "--out", str(tmp_path / "pred")]) == 0, capsys.readouterr().err
    assert list((tmp_path / "pred").glob("*.png"))


@pytest.mark.skipif(REAL_GPU, reason="a GPU is present: --device cuda works here")
@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1"],
    ["evaluate", "--checkpoint", "missing.npz", "--data", "."],
    ["predict", "--checkpoint", "missing.npz", "x.png"],
])
def test_device_cuda_without_a_gpu_is_one_line_and_exit_2(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)       # as if CuPy were not installed
    code = cli.main(command + ["--device", "cuda", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--device cuda" in err and "CuPy" in err
    assert not (tmp_path / "out" / "last.npz").exists()
