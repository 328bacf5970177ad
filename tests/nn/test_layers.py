"""Layers against PyTorch (forward, input and parameter gradients, float64 and float32),
whole-layer gradient checks, initialisation statistics and reproducibility, bad arguments.

PyTorch comparisons copy our state_dict into the torch layer: the names and layouts are
the same, which is itself part of what is tested.
"""
import math

import numpy as np
import pytest

import tinyseg as ts
from tinyseg import nn
from tinyseg.nn import init

TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def assert_close(ours, theirs, dtype, what):
    """|ours − theirs| <= tol · max(1, max|theirs|): relative to the tensor's scale."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, what
    scale = max(1.0, float(np.abs(theirs).max()) if theirs.size else 1.0)
    error = float(np.abs(ours - theirs).max()) / scale if theirs.size else 0.0
    assert error <= TOLERANCE[dtype], f"{what}: relative error {error:.3g} (dtype {np.dtype(dtype).name})"


def copy_into_torch(torch, ours, theirs, dtype):
    theirs.to(getattr(torch, np.dtype(dtype).name))
    theirs.load_state_dict({name: torch.from_numpy(value) for name, value in ours.state_dict().items()})


def check_against_torch(torch, ours, theirs, x, dtype, seed=0):
    """Forward, input gradient and every parameter gradient of one call, with a random upstream gradient."""
    x = x.astype(dtype)
    x_ours = ts.Tensor(x.copy(), requires_grad=True)
    x_theirs = torch.tensor(x, requires_grad=True)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    assert_close(y_ours.data, y_theirs, dtype, "forward")
    upstream = np.random.default_rng(seed).standard_normal(y_ours.shape).astype(dtype)
    y_ours.backward(upstream)
    y_theirs.backward(torch.from_numpy(upstream))
    assert_close(x_ours.grad, x_theirs.grad, dtype, "input gradient")
    their_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad, their_params[name].grad, dtype, f"gradient of {name}")
    ours.zero_grad()
    theirs.zero_grad()


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- convolutions and Linear against PyTorch

CONV_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, stride=2, dilation=2, bias=False),
    dict(kernel_size=(4, 2), padding="same"),
    dict(kernel_size=1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's own performance note
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONV_CASES, ids=str)
def test_conv2d_matches_torch(torch, config, dtype):
    ours = nn.Conv2d(3, 4, **config).astype(dtype)
    theirs = torch.nn.Conv2d(3, 4, **config)
    copy_into_torch(torch, ours, theirs, dtype)
    check_against_torch(torch, ours, theirs, randn(2, 3, 9, 8), dtype)


CONV_TRANSPOSE_CASES = [
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=3, dilation=2, bias=False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONV_TRANSPOSE_CASES, ids=str)
def test_conv_transpose2d_matches_torch(torch, config, dtype):
    ours = nn.ConvTranspose2d(4, 3, **config).astype(dtype)
    theirs = torch.nn.ConvTranspose2d(4, 3, **config)
    copy_into_torch(torch, ours, theirs, dtype)
    check_against_torch(torch, ours, theirs, randn(2, 4, 5, 6), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,bias", [((5, 6), True), ((2, 3, 6), True), ((4, 6), False)])
def test_linear_matches_torch(torch, shape, bias, dtype):
    ours = nn.Linear(6, 3, bias=bias).astype(dtype)
    theirs = torch.nn.Linear(6, 3, bias=bias)
    copy_into_torch(torch, ours, theirs, dtype)
    check_against_torch(torch, ours, theirs, randn(*shape), dtype)


# ----- batch norm: running statistics over several training steps, then evaluation

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_matches_torch_in_training_and_evaluation(torch, momentum, dtype):
    ours = nn.BatchNorm2d(3, momentum=momentum).astype(dtype)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum)
    rng = np.random.default_rng(1)
    ours.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    ours.bias.data[...] = rng.standard_normal(3)
    copy_into_torch(torch, ours, theirs, dtype)
    for step in range(3):
        x = 2.0 + 3.0 * randn(4, 3, 5, 5, seed=step)
        check_against_torch(torch, ours, theirs, x, dtype, seed=step)
    their_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        assert_close(value, their_state[name], dtype, name)
    assert int(ours.num_batches_tracked.data) == 3
    ours.eval()
    theirs.eval()
    check_against_torch(torch, ours, theirs, randn(2, 3, 4, 4, seed=9), dtype)
    np.testing.assert_array_equal(ours.num_batches_tracked.data, 3)        # evaluation does not count


# ----- pooling, upsampling, activations

POOL_CASES = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=(2, 3), stride=1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", POOL_CASES, ids=str)
@pytest.mark.parametrize("kind", ["MaxPool2d", "AvgPool2d"])
def test_pooling_matches_torch(torch, kind, config, dtype):
    ours, theirs = getattr(nn, kind)(**config), getattr(torch.nn, kind)(**config)
    check_against_torch(torch, ours, theirs, randn(2, 3, 7, 8), dtype)


UPSAMPLE_CASES = [dict(scale_factor=2, mode="nearest"), dict(scale_factor=(2, 3), mode="nearest"),
                  dict(scale_factor=2, mode="bilinear", align_corners=False),
                  dict(scale_factor=3, mode="bilinear", align_corners=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", UPSAMPLE_CASES, ids=str)
def test_upsample_matches_torch(torch, config, dtype):
    theirs_config = dict(config, scale_factor=tuple(float(s) for s in np.broadcast_to(config["scale_factor"], 2)))
    check_against_torch(torch, nn.Upsample(**config), torch.nn.Upsample(**theirs_config), randn(2, 2, 4, 5), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kwargs", [("ReLU", {}), ("LeakyReLU", {"negative_slope": 0.2}), ("Sigmoid", {}),
                                         ("Tanh", {}), ("Identity", {})], ids=str)
def test_activations_match_torch(torch, name, kwargs, dtype):
    check_against_torch(torch, getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs), randn(3, 4, 5), dtype)


def test_a_small_network_matches_torch_end_to_end(torch):
    """Conv -> BN -> ReLU -> pool -> transposed conv, parameters named as in torch.nn.Sequential."""
    ours = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.ConvTranspose2d(4, 2, 2, stride=2)).double()
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.ConvTranspose2d(4, 2, 2, stride=2))
    copy_into_torch(torch, ours, theirs, np.float64)
    check_against_torch(torch, ours, theirs, randn(2, 2, 6, 6), np.float64)


@pytest.mark.parametrize("layer,shape", [(lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 6)),
                                         (lambda: nn.ConvTranspose2d(2, 3, 2, stride=2), (2, 2, 5, 6)),
                                         (lambda: nn.BatchNorm2d(2), (2, 2, 5, 6)),
                                         (lambda: nn.Linear(6, 3), (2, 6))], ids=["Conv2d", "ConvTranspose2d",
                                                                                 "BatchNorm2d", "Linear"])
def test_layers_accept_non_contiguous_inputs(layer, shape):
    layer = layer().double()
    x = randn(*shape)
    view = np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)     # same values, transposed strides
    assert not view.flags.c_contiguous
    x_leaf, view_leaf = ts.Tensor(x, requires_grad=True), ts.Tensor(view, requires_grad=True)
    y, y_view = layer(x_leaf), layer(view_leaf)
    np.testing.assert_allclose(y_view.data, y.data, rtol=1e-12, atol=1e-12)
    upstream = randn(*y.shape, seed=1)
    y.backward(upstream)
    y_view.backward(upstream)
    np.testing.assert_allclose(view_leaf.grad, x_leaf.grad, rtol=1e-12, atol=1e-12)


# ----- whole-layer gradient checks (float64 via double())

def with_parameters(layer, names):
    """fn(x, *params) that runs ``layer`` with the given tensors in place of its parameters,
    so that ts.gradcheck can perturb them (it passes fresh copies of its inputs)."""
    def fn(x, *params):
        saved = {name: layer._parameters[name] for name in names}
        layer._parameters.update(zip(names, params))
        try:
            return layer(x)
        finally:
            layer._parameters.update(saved)
    return fn


@pytest.mark.parametrize("layer", [lambda: nn.Linear(4, 3), lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1)],
                         ids=["Linear", "Conv2d"])
def test_layer_gradcheck(layer):
    layer = layer().double()
    x = ts.Tensor(randn(2, 4) if isinstance(layer, nn.Linear) else randn(1, 2, 5, 5), requires_grad=True)
    names = ["weight", "bias"]
    assert ts.gradcheck(with_parameters(layer, names), [x, layer.weight, layer.bias])


# ----- dropout

def test_dropout_layer_trains_and_evaluates():
    ts.manual_seed(0)
    layer = nn.Dropout(0.25)
    y = layer(ts.Tensor(np.ones((200, 200)))).data
    assert abs((y == 0).mean() - 0.25) < 0.01 and np.allclose(y[y != 0], 1 / 0.75)
    layer.eval()
    np.testing.assert_array_equal(layer(ts.Tensor(np.ones(3))).data, np.ones(3))


# ----- initialisation

def test_fans_and_gains_match_torch(torch):
    for shape in [(5, 7), (8, 3, 3, 3), (4, 6, 2, 2)]:
        assert init.calculate_fan_in_and_fan_out(ts.Tensor(np.zeros(shape))) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    for nonlinearity, param in [("relu", None), ("leaky_relu", 0.2), ("leaky_relu", None), ("tanh", None),
                                ("sigmoid", None), ("linear", None), ("selu", None)]:
        assert init.calculate_gain(nonlinearity, param) == pytest.approx(
            torch.nn.init.calculate_gain(nonlinearity, param), rel=1e-12)


def test_conv_transpose_fan_in_is_pytorchs():
    weight = nn.ConvTranspose2d(16, 8, 2, stride=2).weight          # (Cin, Cout, kH, kW)
    assert init.calculate_fan_in_and_fan_out(weight) == (8 * 4, 16 * 4)


def big(shape=(128, 64, 3, 3)):
    return nn.Parameter(np.zeros(shape, np.float32))


def test_kaiming_normal_statistics():
    ts.manual_seed(0)
    w = init.kaiming_normal_(big(), mode="fan_in", nonlinearity="relu")
    assert w.data.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.02)
    assert abs(w.data.mean()) < 0.02 * w.data.std()
    w = init.kaiming_normal_(big(), a=0.2, mode="fan_out", nonlinearity="leaky_relu")
    assert w.data.std() == pytest.approx(math.sqrt(2 / 1.04) / math.sqrt(128 * 9), rel=0.02)


def test_kaiming_uniform_and_xavier_bounds():
    ts.manual_seed(0)
    fan_in, fan_out = 64 * 9, 128 * 9
    w = init.kaiming_uniform_(big(), nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan_in)
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    assert w.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    w = init.xavier_uniform_(big(), gain=2.0)
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(w.data).max() <= bound and np.abs(w.data).max() > 0.99 * bound
    w = init.xavier_normal_(big())
    assert w.data.std() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.02)


def test_simple_fills():
    w = big((3, 4))
    assert (init.ones_(w).data == 1).all() and (init.zeros_(w).data == 0).all()
    assert (init.constant_(w, 0.5).data == 0.5).all()
    u = init.uniform_(big((100, 100)), -2.0, 3.0).data
    assert u.min() >= -2 and u.max() < 3 and u.mean() == pytest.approx(0.5, abs=0.05)
    n = init.normal_(big((100, 100)), mean=1.0, std=0.5).data
    assert n.mean() == pytest.approx(1.0, abs=0.02) and n.std() == pytest.approx(0.5, rel=0.03)


def test_default_layer_init_is_kaiming_normal_with_zero_bias():
    ts.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3)
    assert conv.weight.data.std() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    assert (conv.bias.data == 0).all() and conv.weight.dtype == np.float32
    up = nn.ConvTranspose2d(128, 64, 2, stride=2)
    assert up.weight.data.std() == pytest.approx(math.sqrt(2 / (64 * 4)), rel=0.03)
    linear = nn.Linear(512, 256)
    assert linear.weight.data.std() == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    bn = nn.BatchNorm2d(4)
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all() and (bn.running_var.data == 1).all()


def make_model():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ConvTranspose2d(4, 2, 2), nn.Linear(3, 5))


def test_manual_seed_makes_models_reproducible():
    ts.manual_seed(7)
    first = make_model().state_dict()
    ts.manual_seed(7)
    second = make_model().state_dict()
    ts.manual_seed(8)
    third = make_model().state_dict()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert not np.array_equal(first["0.weight"], third["0.weight"])


def test_float64_init_draws_the_same_numbers():
    ts.manual_seed(3)
    single = init.kaiming_normal_(nn.Parameter(np.zeros((4, 5), np.float32)))
    ts.manual_seed(3)
    double = init.kaiming_normal_(nn.Parameter(np.zeros((4, 5), np.float64)))
    np.testing.assert_array_equal(single.data, double.data.astype(np.float32))


def test_init_bad_input():
    with pytest.raises(TypeError, match="kaiming_normal_: argument 'tensor' expected a floating-point"):
        init.kaiming_normal_(ts.Tensor(np.zeros((2, 2), np.int64)))
    with pytest.raises(TypeError, match="expected a Tensor or Parameter"):
        init.zeros_(np.zeros(3))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.xavier_uniform_(nn.Parameter(np.zeros(5)))
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="'mode' expected 'fan_in' or 'fan_out'"):
        init.kaiming_uniform_(big((2, 2)), mode="fan_avg")


# ----- bad arguments and inputs

@pytest.mark.parametrize("build,error,match", [
    (lambda: nn.Conv2d(0, 2, 3), ValueError, "Conv2d: argument 'in_channels' expected a positive int, got 0"),
    (lambda: nn.Conv2d(1, 2.0, 3), TypeError, "Conv2d: argument 'out_channels' expected a positive int"),
    (lambda: nn.Conv2d(1, 2, "3"), TypeError, "Conv2d: argument 'kernel_size' expected an int or a pair"),
    (lambda: nn.Conv2d(1, 2, 3, padding="full"), ValueError, "Conv2d: argument 'padding' expected"),
    (lambda: nn.Conv2d(1, 2, 3, stride=0), ValueError, "Conv2d: argument 'stride' expected values >= 1"),
    (lambda: nn.ConvTranspose2d(1, 2, 0), ValueError, "ConvTranspose2d: argument 'kernel_size'"),
    (lambda: nn.Linear(3, -1), ValueError, "Linear: argument 'out_features'"),
    (lambda: nn.MaxPool2d(2, padding=-1), ValueError, "MaxPool2d: argument 'padding'"),
    (lambda: nn.Upsample(mode="bicubic"), ValueError, "Upsample: argument 'mode'"),
    (lambda: nn.Upsample(mode="nearest", align_corners=True), ValueError, "align_corners=True only applies"),
    (lambda: nn.BatchNorm2d(3, eps=0), ValueError, "BatchNorm2d: argument 'eps'"),
    (lambda: nn.BatchNorm2d(3, momentum=2), ValueError, "BatchNorm2d: argument 'momentum'"),
    (lambda: nn.Dropout(1.5), ValueError, r"Dropout: argument 'p' expected a value in \[0, 1\], got 1.5"),
    (lambda: nn.LeakyReLU("0.1"), TypeError, "LeakyReLU: argument 'negative_slope'"),
])
def test_bad_layer_arguments(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_bad_layer_inputs():
    with pytest.raises(ValueError, match=r"Linear: argument 'x' expected shape \(\.\.\., 4\)"):
        nn.Linear(4, 2)(ts.Tensor(np.zeros((3, 5), np.float32)))
    with pytest.raises(ValueError, match="BatchNorm2d: argument 'x' expected a 4-D tensor"):
        nn.BatchNorm2d(3)(ts.Tensor(np.zeros((2, 3), np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm2d: argument 'x' expected 3 channels"):
        nn.BatchNorm2d(3)(ts.Tensor(np.zeros((2, 4, 2, 2), np.float32)))


def test_layer_reprs():
    assert repr(nn.ConvTranspose2d(4, 2, 2, stride=2)) == "ConvTranspose2d(4, 2, kernel_size=(2, 2), stride=(2, 2))"
    assert repr(nn.Conv2d(1, 2, 3, padding="same")) == \
        "Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1), padding='same')"
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))"
    assert repr(nn.BatchNorm2d(8)) == "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True)"
    assert repr(nn.Upsample(mode="bilinear")) == "Upsample(scale_factor=2, mode='bilinear', align_corners=False)"
