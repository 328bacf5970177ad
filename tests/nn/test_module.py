"""Module, Parameter, Buffer and Sequential: registration, discovery, modes, state, devices, printing."""
import numpy as np
import pytest

import tinyseg as ts
from tinyseg import nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(np.ones(1, np.float32))
        self.down = nn.Sequential(Block(1, 2), Block(2, 4))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)
        self.note = "not state"                       # plain attributes are not registered
        self.plain_tensor = ts.Tensor(np.zeros(2))    # nor are Tensors that are not Parameters/Buffers


# ----- registration and discovery

def test_parameters_are_found_with_dotted_names_in_registration_order():
    names = [name for name, _ in Net().named_parameters()]
    assert names == ["scale",
                     "down.0.conv1.weight", "down.0.conv1.bias", "down.0.norm1.weight", "down.0.norm1.bias",
                     "down.1.conv1.weight", "down.1.conv1.bias", "down.1.norm1.weight", "down.1.norm1.bias",
                     "head.weight", "head.bias"]


def test_buffers_children_and_modules():
    net = Net()
    assert [name for name, _ in net.named_buffers()] == [
        f"down.{i}.norm1.{b}" for i in (0, 1) for b in ("running_mean", "running_var", "num_batches_tracked")]
    assert [name for name, _ in net.named_children()] == ["down", "drop", "head"]
    assert [type(m).__name__ for m in net.modules()] == [
        "Net", "Sequential", "Block", "Conv2d", "BatchNorm2d", "ReLU", "Block", "Conv2d", "BatchNorm2d", "ReLU",
        "Dropout", "Linear"]
    assert net.parameters(recurse=False) == [net.scale]


def test_parameter_defaults_and_attribute_access():
    p = nn.Parameter([1.0, 2.0])
    assert p.requires_grad and p.dtype == np.float32
    assert nn.Parameter(np.zeros(2)).dtype == np.float64          # an array keeps its dtype
    net = Net()
    assert net.head.weight is net._modules["head"]._parameters["weight"]
    assert net.note == "not state" and "plain_tensor" not in dict(net.named_buffers())


def test_reassignment_and_deletion_update_the_registries():
    net = Net()
    net.head = nn.Identity()                          # replaces the Linear: its parameters are gone
    assert not any(name.startswith("head.") for name, _ in net.named_parameters())
    net.head.bias = None                              # plain attribute on a module without that slot
    layer = nn.Linear(2, 2)
    layer.bias = None                                 # keeps the slot, skipped by discovery
    assert [name for name, _ in layer.named_parameters()] == ["weight"] and layer.bias is None
    del layer.weight
    assert layer.parameters() == []
    with pytest.raises(AttributeError, match="no attribute 'weight'"):
        layer.weight


def test_forgetting_super_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\)"):
        Broken()


def test_shared_parameters_are_listed_once_and_counted_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(model.parameters()) == 2
    assert model.num_parameters() == 12
    assert Net().num_parameters() == 1 + (2 * 9 + 2 + 4) + (8 * 9 + 4 + 8) + (12 + 3)


def test_register_buffer_and_parameter_by_name():
    m = nn.Module()
    m.register_buffer("count", np.zeros((), np.int64))
    m.register_parameter("w", nn.Parameter(np.ones(2)))
    assert isinstance(m.count, nn.Buffer) and list(m.state_dict()) == ["w", "count"]
    with pytest.raises(TypeError, match="expected a Parameter"):
        m.register_parameter("v", np.ones(2))


# ----- modes and gradients

def test_train_and_eval_propagate_to_every_descendant():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.down.train(False)
    assert not net.down[1].norm1.training and net.head.training
    with pytest.raises(TypeError, match="expected a bool"):
        net.train("no")


def test_eval_mode_changes_dropout_behaviour():
    drop = nn.Dropout(0.5)
    x = ts.Tensor(np.ones((100, 100)))
    assert (drop(x).data == 0).any()
    drop.eval()
    np.testing.assert_array_equal(drop(x).data, x.data)


def test_zero_grad_sets_every_grad_to_none():
    layer = nn.Linear(3, 2)
    out = layer(ts.Tensor(np.ones((4, 3), np.float32)))
    out.backward(np.ones(out.shape, np.float32))
    assert layer.weight.grad is not None and layer.bias.grad is not None
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


# ----- state_dict / load_state_dict

def test_state_dict_holds_numpy_copies_in_pytorchs_key_order():
    net = Net()
    state = net.state_dict()
    assert list(state)[:8] == ["scale", "down.0.conv1.weight", "down.0.conv1.bias", "down.0.norm1.weight",
                               "down.0.norm1.bias", "down.0.norm1.running_mean", "down.0.norm1.running_var",
                               "down.0.norm1.num_batches_tracked"]
    assert all(isinstance(v, np.ndarray) for v in state.values())
    state["head.weight"][...] = 123.0
    assert not (net.head.weight.data == 123.0).any()


def test_state_dict_keys_match_pytorch():
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.ConvTranspose2d(2, 1, 2, stride=2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                 torch.nn.ConvTranspose2d(2, 1, 2, stride=2))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        assert ours.state_dict()[name].shape == tuple(value.shape)


def test_load_state_dict_round_trip_is_in_place():
    source, target = Net(), Net()
    source.down[0].norm1.running_mean.data[...] = 7.0
    weight = target.head.weight
    assert target.load_state_dict(source.state_dict()) == ([], [])
    assert target.head.weight is weight                  # same Parameter objects (optimizers keep them)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_load_state_dict_casts_to_the_parameters_dtype():
    layer = nn.Linear(2, 3)
    state = {"weight": np.arange(6, dtype=np.float64).reshape(3, 2) / 7, "bias": ts.Tensor(np.ones(3))}
    layer.load_state_dict(state)
    assert layer.weight.dtype == np.float32
    np.testing.assert_allclose(layer.weight.data, state["weight"], rtol=1e-7)


def test_load_state_dict_reports_every_problem_at_once():
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.Linear(4, 2))
    state = nn.Sequential(nn.Conv2d(1, 16, 3), nn.Linear(4, 2)).state_dict()
    del state["1.bias"]
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing key '1.bias'" in message
    assert "unexpected key 'extra.weight'" in message
    assert "shape mismatch for '0.weight': checkpoint (16, 1, 3, 3), model (32, 1, 3, 3)" in message
    assert "shape mismatch for '0.bias': checkpoint (16,), model (32,)" in message


def test_load_state_dict_errors_leave_the_model_untouched():
    model = nn.Linear(2, 2)
    before = model.state_dict()
    state = {"weight": np.full((2, 2), 5.0), "bias": np.zeros(3)}
    with pytest.raises(ValueError, match=r"shape mismatch for 'bias': checkpoint \(3,\), model \(2,\)"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.weight.data, before["weight"])


def test_load_state_dict_non_strict_returns_what_it_skipped():
    model = nn.Linear(2, 2)
    result = model.load_state_dict({"weight": np.ones((2, 2)), "other": np.ones(1)}, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["other"]
    np.testing.assert_array_equal(model.weight.data, np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape mismatch"):       # shapes are checked even when not strict
        model.load_state_dict({"weight": np.ones((3, 2))}, strict=False)


def test_load_state_dict_bad_input():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="expected a dict"):
        model.load_state_dict([("weight", np.ones((2, 2)))])
    with pytest.raises(TypeError, match="'bias' expected a numeric array"):
        model.load_state_dict({"weight": np.ones((2, 2)), "bias": np.array([None, None])})


# ----- devices and dtypes

def test_to_validates_the_device_and_cpu_is_a_no_op():
    layer = nn.Linear(2, 2)
    weight = layer.weight.data
    assert layer.to("cpu") is layer and layer.weight.data is weight
    with pytest.raises(ValueError, match="device expected 'cpu' or 'cuda', got 'tpu'"):
        layer.to("tpu")


def test_to_cuda_without_cupy_is_a_clear_error():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed here: moving to the GPU is tested in test_to_cuda_and_back")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="needs CuPy"):
        nn.Linear(2, 2).to("cuda")


def test_to_cuda_and_back():
    pytest.importorskip("cupy")
    if not ts.backend.gpu_available():
        pytest.skip("no CUDA device")
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm2d(2))
    before = model.state_dict()
    model.to("cuda")
    assert all(t.device == "cuda" for t in model.parameters() + model.buffers())
    assert all(isinstance(v, np.ndarray) for v in model.state_dict().values())     # state_dict is on the CPU
    model.load_state_dict(before)                                                  # CPU arrays into GPU tensors
    assert model[0].weight.device == "cuda"
    model.to("cpu")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_double_converts_float_state_and_keeps_integer_buffers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].weight.grad = np.ones(2, np.float32)
    model.double()
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[1].running_var.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    assert model[1].weight.grad.dtype == np.float64
    model.float()
    assert model[0].weight.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point dtype"):
        model.astype(np.int32)


# ----- printing and Sequential

def test_repr_is_nested_like_pytorch():
    text = repr(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Sequential(nn.ReLU(), nn.Dropout(0.2))))
    assert text == ("Sequential(\n"
                    "  (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
                    "  (1): Sequential(\n"
                    "    (0): ReLU()\n"
                    "    (1): Dropout(p=0.2)\n"
                    "  )\n"
                    ")")


def test_sequential_indexing_iteration_and_length():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    seq = nn.Sequential(*layers)
    assert len(seq) == 3 and list(seq) == layers
    assert seq[0] is layers[0] and seq[-1] is layers[2]
    assert isinstance(seq[1:], nn.Sequential) and list(seq[1:]) == layers[1:]
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = ts.Tensor(np.ones((5, 2), np.float32))
    np.testing.assert_allclose(seq(x).data, F_sigmoid(layers[2](layers[1](layers[0](x)))).data)
    with pytest.raises(IndexError, match="out of range"):
        seq[4]
    with pytest.raises(TypeError, match="expected a Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def F_sigmoid(x):
    return ts.functional.sigmoid(x)


def test_a_module_without_forward_says_so():
    with pytest.raises(NotImplementedError, match="Module must define forward"):
        nn.Module()(1)
