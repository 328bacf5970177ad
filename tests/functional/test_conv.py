"""conv2d and conv_transpose2d.

For each: forward against tinyseg.reference, gradcheck (several configurations),
hypothesis (shapes, kernels, stride, padding, dilation, bias, memory layout) against the
reference and against PyTorch, non-contiguous inputs, PyTorch forward and backward with random
upstream gradients in float64 and float32 (the edge cases: stride 2/3, dilation 2,
asymmetric kernels and sizes, padding="same" with even kernels, output_padding, input
rows that no window reads), bad input. Also the memory design (backward keeps no
im2col matrix), the shared work buffer, and kernel selection.
"""
import re
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg import reference as ref
from tinyseg.functional import conv


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def leaf(array):
    return ts.Tensor(np.array(array), requires_grad=True)


def make_inputs(seed, x_shape, weight_shape, bias_size, dtype=np.float64):
    """Standard-normal x, weight and bias (None when bias_size is None)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(weight_shape).astype(dtype)
    bias = None if bias_size is None else rng.standard_normal(bias_size).astype(dtype)
    return x, weight, bias


def transposed_layout(a):
    """The same values, stored with H and W swapped in memory (not C-contiguous)."""
    return np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)


def out_channels(op_name, weight_shape):
    return weight_shape[0] if op_name == "conv2d" else weight_shape[1]


def tinyseg_results(op_name, x, weight, bias, upstream_seed, **params):
    """tinyseg's (y, dx, dw, db) with a random upstream gradient, and that gradient."""
    xt, wt = ts.Tensor(x, requires_grad=True), ts.Tensor(weight, requires_grad=True)
    bt = None if bias is None else ts.Tensor(bias, requires_grad=True)
    y = getattr(F, op_name)(xt, wt, bt, **params)
    upstream = np.random.default_rng(upstream_seed).standard_normal(y.shape).astype(x.dtype)
    y.backward(upstream)
    return (y.data, xt.grad, wt.grad, None if bt is None else bt.grad), upstream


def torch_results(torch, op_name, x, weight, bias, upstream, **params):
    """PyTorch's (y, dx, dw, db) for the same inputs and upstream gradient."""
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    y = getattr(torch.nn.functional, op_name)(xt, wt, bt, **params)
    y.backward(torch.tensor(upstream))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


def assert_close_relative(actual, expected, tolerance, what=""):
    """|actual − expected| <= tolerance · max(1, max|expected|), elementwise."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tolerance * scale, err_msg=what)


def compare_with_torch(torch, op_name, case, dtype, tolerance):
    x, weight, bias = make_inputs(0, case["x"], case["w"], case.get("b"), dtype)
    results, upstream = tinyseg_results(op_name, x, weight, bias, 1, **case["params"])
    expected = torch_results(torch, op_name, x, weight, bias, upstream, **case["params"])
    for name, a, e in zip(("y", "dx", "dw", "db"), results, expected):
        if e is None:
            assert a is None
            continue
        assert a.shape == e.shape, name
        assert a.dtype == dtype, name
        assert_close_relative(a, e, tolerance, name)


# Configurations shared by the reference and PyTorch tests (gradcheck has smaller ones below).
CONV2D_CASES = {
    "basic": dict(x=(2, 3, 6, 5), w=(4, 3, 3, 3), b=4, params=dict(padding=1)),
    "stride 2": dict(x=(2, 3, 9, 7), w=(4, 3, 3, 3), b=4, params=dict(stride=2, padding=1)),
    "stride 3": dict(x=(2, 3, 10, 11), w=(2, 3, 3, 3), b=2, params=dict(stride=3)),
    "stride > kernel": dict(x=(1, 2, 9, 8), w=(3, 2, 2, 2), b=3, params=dict(stride=3, padding=1)),
    "dilation 2": dict(x=(2, 3, 8, 9), w=(2, 3, 3, 3), b=2, params=dict(padding=2, dilation=2)),
    "asymmetric everything": dict(x=(2, 3, 7, 10), w=(3, 3, 2, 3), b=3,
                                  params=dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    "unreached rows": dict(x=(2, 3, 8, 8), w=(2, 3, 3, 3), b=None, params=dict(stride=2)),
    "same, even kernel": dict(x=(2, 3, 6, 5), w=(2, 3, 2, 2), b=2, params=dict(padding="same")),
    "same, even kernels, dilation": dict(x=(1, 2, 7, 6), w=(3, 2, 4, 2), b=3,
                                         params=dict(padding="same", dilation=(1, 3))),
    "same, 3x3": dict(x=(1, 2, 5, 7), w=(2, 2, 3, 3), b=None, params=dict(padding="same")),
    "valid": dict(x=(1, 2, 5, 7), w=(2, 2, 3, 2), b=2, params=dict(padding="valid")),
    "pointwise": dict(x=(2, 4, 5, 6), w=(3, 4, 1, 1), b=3, params=dict()),
    "pointwise, stride 2": dict(x=(2, 4, 5, 6), w=(3, 4, 1, 1), b=None, params=dict(stride=2)),
    "padding > kernel reach": dict(x=(1, 2, 4, 5), w=(2, 2, 3, 3), b=2, params=dict(padding=3)),
}

CONV_TRANSPOSE2D_CASES = {
    "U-Net 2x2 stride 2": dict(x=(2, 4, 5, 6), w=(4, 3, 2, 2), b=3, params=dict(stride=2)),
    "stride 2, output_padding 1": dict(x=(2, 3, 4, 5), w=(3, 2, 3, 3), b=2,
                                       params=dict(stride=2, padding=1, output_padding=1)),
    "stride 3, gaps, output_padding 2": dict(x=(2, 2, 3, 4), w=(2, 3, 2, 3), b=3,
                                             params=dict(stride=3, output_padding=2)),
    "output_padding row reached by the kernel": dict(x=(1, 2, 4, 3), w=(2, 2, 3, 3), b=2,
                                                     params=dict(stride=2, padding=2, output_padding=1)),
    "stride 1, dilation 2, output_padding 1": dict(x=(2, 2, 4, 5), w=(2, 3, 3, 3), b=3,
                                                   params=dict(padding=1, output_padding=1, dilation=2)),
    "asymmetric everything": dict(x=(2, 3, 4, 6), w=(3, 2, 2, 3), b=2,
                                  params=dict(stride=(2, 1), padding=(0, 1), output_padding=(1, 0),
                                              dilation=(1, 2))),
    "4x4 stride 2 padding 1": dict(x=(1, 2, 5, 4), w=(2, 2, 4, 4), b=None, params=dict(stride=2, padding=1)),
    "stride 1, padding 1": dict(x=(2, 3, 5, 6), w=(3, 2, 3, 3), b=2, params=dict(padding=1)),
    "stride 1, padding > kernel reach": dict(x=(1, 2, 7, 8), w=(2, 2, 3, 3), b=2, params=dict(padding=3)),
    "pointwise": dict(x=(2, 3, 4, 5), w=(3, 2, 1, 1), b=None, params=dict()),
    "pointwise, output_padding >= stride": dict(x=(2, 2, 3, 4), w=(2, 3, 1, 1), b=3,
                                                params=dict(output_padding=(1, 0), dilation=(2, 1))),
}

OPS = {"conv2d": CONV2D_CASES, "conv_transpose2d": CONV_TRANSPOSE2D_CASES}
ALL_CASES = [pytest.param(op_name, case, id=f"{op_name}: {name}")
             for op_name, cases in OPS.items() for name, case in cases.items()]


def reference_of(op_name):
    return getattr(ref, op_name)


# ----- (a) forward against the reference

@pytest.mark.parametrize("op_name, case", ALL_CASES)
def test_forward_matches_reference(op_name, case):
    x, weight, bias = make_inputs(2, case["x"], case["w"], case.get("b"))
    y = getattr(F, op_name)(x, weight, bias, **case["params"])
    expected = reference_of(op_name)(x, weight, bias, **case["params"])
    assert y.shape == expected.shape and y.dtype == np.float64
    assert_close_relative(y.data, expected, 1e-12)


def test_unreached_input_rows_get_zero_gradient_and_the_input_shape():
    # H = W = 8, k = 3, s = 2, p = 0: windows start at 0, 2, 4 and read rows 0..6; row 7 is read by none.
    x, weight, _ = make_inputs(3, (2, 3, 8, 8), (4, 3, 3, 3), None)
    (y, dx, dw, _), _ = tinyseg_results("conv2d", x, weight, None, 4, stride=2)
    assert y.shape == (2, 4, 3, 3) and dx.shape == x.shape and dw.shape == weight.shape
    assert np.all(dx[:, :, 7, :] == 0) and np.all(dx[:, :, :, 7] == 0)
    assert np.all(np.abs(dx[:, :, :7, :7]).sum(axis=(0, 1)) > 0)


def test_stride_3_leaves_a_two_row_gap_at_the_bottom():
    # H = 10, k = 2, s = 3: windows read rows {0,1}, {3,4}, {6,7}; rows 2, 5, 8, 9 get 0.
    x, weight, _ = make_inputs(5, (1, 2, 10, 4), (2, 2, 2, 1), None)
    (_, dx, _, _), _ = tinyseg_results("conv2d", x, weight, None, 6, stride=(3, 1))
    assert dx.shape == x.shape
    assert np.all(dx[:, :, [2, 5, 8, 9], :] == 0)


def test_bias_adds_per_channel_and_output_padding_rows_may_hold_more_than_the_bias():
    # With padding 0 the output_padding row receives only the bias ...
    # (H = 3, k = 2, s = 3: windows write rows {0,1}, {3,4}, {6,7}; rows 2, 5 and 8, 9 get only b.)
    x, weight, bias = make_inputs(7, (1, 2, 3, 3), (2, 3, 2, 2), 3)
    y = F.conv_transpose2d(x, weight, bias, stride=3, output_padding=2).data
    assert y.shape == (1, 3, 10, 10)
    np.testing.assert_array_equal(y[:, :, [2, 5, 8, 9], :], np.broadcast_to(bias[None, :, None, None], (1, 3, 4, 10)))
    # ... but with padding > 0 it is a cropped row that kernel taps do reach (as PyTorch).
    y = F.conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1).data
    expected = ref.conv_transpose2d(x, weight, bias, stride=2, padding=1, output_padding=1)
    assert_close_relative(y, expected, 1e-12)
    assert not np.allclose(y[:, :, -1, :], bias[None, :, None])


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    # <conv2d(x, W), z> = <x, conv_transpose2d(z, W)> for the same stride, padding, dilation.
    rng = np.random.default_rng(8)
    x, weight = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 2))
    params = dict(stride=2, padding=1, dilation=(1, 2))
    y = F.conv2d(x, weight, **params).data
    z = rng.standard_normal(y.shape)
    back = F.conv_transpose2d(z, weight, output_padding=(0, 1), **params).data
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, z), np.vdot(x, back), rtol=1e-12)


def test_inputs_and_upstream_gradient_are_not_modified():
    for op_name, case in (("conv2d", CONV2D_CASES["stride 2"]), ("conv_transpose2d",
                                                                 CONV_TRANSPOSE2D_CASES["stride 1, padding 1"])):
        x, weight, bias = make_inputs(9, case["x"], case["w"], case["b"])
        xt, wt, bt = leaf(x), leaf(weight), leaf(bias)
        y = getattr(F, op_name)(xt, wt, bt, **case["params"])
        upstream = np.random.default_rng(10).standard_normal(y.shape)
        copies = [a.copy() for a in (xt.data, wt.data, bt.data, upstream)]
        y.backward(upstream)
        for original, copy in zip((xt.data, wt.data, bt.data, upstream), copies):
            np.testing.assert_array_equal(original, copy)


# ----- (b) gradcheck: full Jacobian with one-hot upstream gradients, float64

GRADCHECK_CASES = [
    ("conv2d", dict(x=(1, 2, 5, 6), w=(3, 2, 3, 3), b=3, params=dict(padding=1))),
    ("conv2d", dict(x=(2, 2, 6, 5), w=(2, 2, 3, 3), b=2, params=dict(stride=2))),
    ("conv2d", dict(x=(1, 2, 7, 6), w=(2, 2, 2, 3), b=None, params=dict(stride=(1, 2), padding=(1, 0),
                                                                        dilation=(2, 1)))),
    ("conv2d", dict(x=(1, 2, 5, 5), w=(2, 2, 2, 2), b=2, params=dict(padding="same"))),
    ("conv2d", dict(x=(1, 2, 8, 7), w=(2, 2, 2, 2), b=2, params=dict(stride=3, dilation=2, padding=1))),
    ("conv2d", dict(x=(1, 3, 4, 5), w=(2, 3, 1, 1), b=2, params=dict())),
    ("conv_transpose2d", dict(x=(1, 2, 3, 4), w=(2, 3, 2, 2), b=3, params=dict(stride=2))),
    ("conv_transpose2d", dict(x=(1, 2, 3, 3), w=(2, 2, 3, 3), b=2,
                              params=dict(stride=2, padding=1, output_padding=1))),
    ("conv_transpose2d", dict(x=(2, 2, 3, 2), w=(2, 2, 3, 2), b=None, params=dict(stride=3, output_padding=2))),
    ("conv_transpose2d", dict(x=(1, 2, 4, 4), w=(2, 2, 3, 3), b=2,
                              params=dict(padding=1, output_padding=1, dilation=2))),
    ("conv_transpose2d", dict(x=(1, 2, 6, 5), w=(2, 2, 3, 3), b=2, params=dict(padding=3))),
]


@pytest.mark.parametrize("op_name, case", GRADCHECK_CASES,
                         ids=[f"{op} {case['params']}" for op, case in GRADCHECK_CASES])
def test_gradcheck(op_name, case):
    x, weight, bias = make_inputs(11, case["x"], case["w"], case["b"])
    op = getattr(F, op_name)
    if bias is None:
        assert ts.gradcheck(lambda a, w: op(a, w, **case["params"]), [leaf(x), leaf(weight)])
    else:
        assert ts.gradcheck(lambda a, w, b: op(a, w, b, **case["params"]), [leaf(x), leaf(weight), leaf(bias)])


@pytest.mark.parametrize("op_name", ["conv2d", "conv_transpose2d"])
def test_backward_skips_gradients_nobody_asked_for(op_name, monkeypatch):
    case = OPS[op_name]["stride 2" if op_name == "conv2d" else "stride 2, output_padding 1"]
    x, weight, bias = make_inputs(12, case["x"], case["w"], case["b"])
    # The primitive that computes each gradient: conv_transpose2d's dX is a conv2d forward.
    primitive_for_x = "input_grad" if op_name == "conv2d" else "forward"

    def must_not_run(*args):
        raise AssertionError("backward computed a gradient that no input asked for")

    for wanted, skipped in (("x", "weight_grad"), ("weight", primitive_for_x)):
        xt = ts.Tensor(x, requires_grad=wanted == "x")
        wt = ts.Tensor(weight, requires_grad=wanted == "weight")
        y = getattr(F, op_name)(xt, wt, bias, **case["params"])
        with monkeypatch.context() as patch:
            patch.setattr(conv.Im2colKernel, skipped, staticmethod(must_not_run))
            y.backward(np.ones(y.shape))
        assert (xt if wanted == "x" else wt).grad is not None


# ----- (c) hypothesis: drawn shapes, kernels and parameters

@st.composite
def conv2d_configs(draw):
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from([0, 1, 2, (0, 1), (2, 1), "same", "valid"]))
    stride = 1 if padding == "same" else draw(st.sampled_from([1, 2, 3, (1, 2), (3, 1)]))
    return dict(x=(draw(st.integers(1, 2)), c_in, draw(st.integers(1, 7)), draw(st.integers(1, 7))),
                w=(c_out, c_in, draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                b=c_out if draw(st.booleans()) else None,
                params=dict(stride=stride, padding=padding, dilation=draw(st.sampled_from([1, 2, (1, 2), (2, 1)]))),
                non_contiguous=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@st.composite
def conv_transpose2d_configs(draw):
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    # PyTorch's rule: output_padding < stride or < dilation, in each dimension.
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    return dict(x=(draw(st.integers(1, 2)), c_in, draw(st.integers(1, 5)), draw(st.integers(1, 5))),
                w=(c_in, c_out, draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                b=c_out if draw(st.booleans()) else None,
                params=dict(stride=stride, padding=draw(st.sampled_from([0, 1, 2, (1, 0)])),
                            output_padding=output_padding, dilation=dilation),
                non_contiguous=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def check_against_reference(op_name, config):
    """Forward equals the reference; gradients satisfy the adjoint identities of a bilinear map.

    y is linear in x and in W, so for random directions δx, δW:
        <dX, δx> = <dY, op(δx, W)>,   <dW, δW> = <dY, op(x, δW)>,   db = Σ_{n,i,j} dY.
    """
    x, weight, bias = make_inputs(config["seed"], config["x"], config["w"], config["b"])
    params, reference = config["params"], reference_of(op_name)
    try:
        expected = reference(x, weight, bias, **params)
    except ValueError:           # the drawn configuration has an empty output: ours must refuse it too
        event("empty output")
        with pytest.raises(ValueError, match=op_name):
            getattr(F, op_name)(x, weight, bias, **params)
        return
    x_layout = transposed_layout(x) if config["non_contiguous"] else x
    (y, dx, dw, db), upstream = tinyseg_results(op_name, x_layout, weight, bias, config["seed"] + 1, **params)
    assert_close_relative(y, expected, 1e-12)
    rng = np.random.default_rng(config["seed"] + 2)
    dx_direction, dw_direction = rng.standard_normal(x.shape), rng.standard_normal(weight.shape)
    along_x = np.vdot(upstream, reference(dx_direction, weight, None, **params))
    along_w = np.vdot(upstream, reference(x, dw_direction, None, **params))
    np.testing.assert_allclose(np.vdot(dx, dx_direction), along_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.vdot(dw, dw_direction), along_w, rtol=1e-10, atol=1e-10)
    if bias is not None:
        np.testing.assert_allclose(db, upstream.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(config=conv2d_configs())
def test_hypothesis_conv2d_against_reference(config):
    check_against_reference("conv2d", config)


@settings(max_examples=100, deadline=None)
@given(config=conv_transpose2d_configs())
def test_hypothesis_conv_transpose2d_against_reference(config):
    check_against_reference("conv_transpose2d", config)


def check_against_torch(torch, op_name, config):
    x, weight, bias = make_inputs(config["seed"], config["x"], config["w"], config["b"])
    params = config["params"]
    x_layout = transposed_layout(x) if config["non_contiguous"] else x
    try:
        results, upstream = tinyseg_results(op_name, x_layout, weight, bias, config["seed"] + 1, **params)
    except ValueError:           # empty output: tested against the reference above
        return
    for a, e in zip(results, torch_results(torch, op_name, x, weight, bias, upstream, **params)):
        if e is not None:
            assert_close_relative(a, e, 1e-10)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=conv2d_configs())
def test_hypothesis_conv2d_against_torch(torch, config):
    check_against_torch(torch, "conv2d", config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=conv_transpose2d_configs())
def test_hypothesis_conv_transpose2d_against_torch(torch, config):
    check_against_torch(torch, "conv_transpose2d", config)


# ----- (d) non-contiguous inputs

@pytest.mark.parametrize("op_name, case", [
    pytest.param("conv2d", CONV2D_CASES["stride 2"], id="conv2d stride 2"),
    pytest.param("conv2d", CONV2D_CASES["same, even kernel"], id="conv2d same"),
    pytest.param("conv2d", CONV2D_CASES["pointwise"], id="conv2d pointwise"),
    pytest.param("conv_transpose2d", CONV_TRANSPOSE2D_CASES["stride 2, output_padding 1"], id="transpose stride 2"),
    pytest.param("conv_transpose2d", CONV_TRANSPOSE2D_CASES["stride 1, padding 1"], id="transpose stride 1"),
])
def test_non_contiguous_inputs(op_name, case):
    x, weight, bias = make_inputs(13, case["x"], case["w"], case["b"])
    (y, dx, dw, db), upstream = tinyseg_results(op_name, x, weight, bias, 14, **case["params"])

    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],))
    wide[..., ::2] = x
    for x_view in (transposed_layout(x), wide[..., ::2]):       # a transposed layout; a strided slice
        assert not x_view.flags.c_contiguous
        xt = ts.Tensor(x_view, requires_grad=True)
        wt = ts.Tensor(transposed_layout(weight), requires_grad=True)
        bt = None if bias is None else ts.Tensor(bias[::-1].copy()[::-1], requires_grad=True)
        y_view = getattr(F, op_name)(xt, wt, bt, **case["params"])
        y_view.backward(transposed_layout(upstream))
        for a, e in zip((y_view.data, xt.grad, wt.grad), (y, dx, dw)):
            np.testing.assert_allclose(a, e, rtol=0, atol=1e-12)


# ----- (e) PyTorch: forward and backward with random upstream gradients

@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("op_name, case", ALL_CASES)
def test_against_torch(torch, op_name, case, dtype, tolerance):
    compare_with_torch(torch, op_name, case, dtype, tolerance)


@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["float64", "float32"])
def test_unet_sized_layer_against_torch(torch, dtype, tolerance):
    # Large enough that the float32 sums (288 terms per output, 2·64·64 per weight) are realistic.
    case = dict(x=(2, 32, 64, 64), w=(32, 32, 3, 3), b=32, params=dict(padding=1))
    compare_with_torch(torch, "conv2d", case, dtype, tolerance)
    case = dict(x=(2, 32, 32, 32), w=(32, 16, 2, 2), b=16, params=dict(stride=2))
    compare_with_torch(torch, "conv_transpose2d", case, dtype, tolerance)


# ----- memory design: backward recomputes im2col instead of keeping it

def saved_arrays(obj, seen=None):
    """Every ndarray reachable from ``obj``'s attributes, except through the input Tensors."""
    seen = {} if seen is None else seen
    for value in vars(obj).values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if isinstance(item, np.ndarray):
                seen[id(item)] = item
            elif (hasattr(item, "__dict__") and not isinstance(item, (ts.Tensor, type, types.ModuleType))
                  and id(item) not in seen):     # not into modules: the array module (xp) holds arrays of its own
                seen[id(item)] = None
                saved_arrays(item, seen)
    return [a for a in seen.values() if a is not None]


@pytest.mark.parametrize("op_name, x_shape, w_shape, params", [
    ("conv2d", (2, 8, 16, 16), (8, 8, 3, 3), dict(padding=1)),
    ("conv2d", (2, 8, 17, 16), (8, 8, 3, 3), dict(stride=2)),
    ("conv_transpose2d", (2, 8, 16, 16), (8, 8, 3, 3), dict(padding=1)),
    ("conv_transpose2d", (2, 8, 8, 8), (8, 4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
])
def test_function_saves_no_array_larger_than_its_inputs(op_name, x_shape, w_shape, params):
    x, weight, bias = make_inputs(15, x_shape, w_shape, out_channels(op_name, w_shape))
    y = getattr(F, op_name)(leaf(x), leaf(weight), leaf(bias), **params)
    fn = y._creator
    arrays = saved_arrays(fn)
    assert sum(a.nbytes for a in arrays) <= x.nbytes + weight.nbytes + bias.nbytes, \
        [(type(a), a.shape) for a in arrays]


def test_results_never_alias_the_shared_work_buffer():
    conv.release_scratch_memory()
    x, weight, bias = make_inputs(16, (2, 3, 8, 8), (4, 3, 3, 3), 4)
    (y, dx, dw, db), _ = tinyseg_results("conv2d", x, weight, bias, 17, stride=2, padding=1)
    kept = [a.copy() for a in (y, dx, dw, db)]
    assert len(conv._scratch_buffers) == 1
    buffer = next(iter(conv._scratch_buffers.values()))

    tinyseg_results("conv2d", x[::-1].copy(), weight, bias, 18, stride=2, padding=1)   # same shapes: reuses the buffer
    tinyseg_results("conv2d", x[:1], weight[:2, :, :2], None, 19)                       # smaller: reuses it too
    F.conv_transpose2d(x[:, :, :2, :2], weight.transpose(1, 0, 2, 3), stride=2)
    assert next(iter(conv._scratch_buffers.values())) is buffer
    for a, b in zip((y, dx, dw, db), kept):
        np.testing.assert_array_equal(a, b)

    F.conv2d(x.astype(np.float32), weight.astype(np.float32), padding=1)    # one buffer per dtype
    assert len(conv._scratch_buffers) == 2
    conv.release_scratch_memory()
    assert not conv._scratch_buffers


# ----- kernel selection

def test_unknown_kernel_is_a_clear_error():
    x, weight, _ = make_inputs(20, (1, 2, 5, 5), (2, 2, 3, 3), None)
    with backend.use_kernel("conv2d", "no-such-kernel"):
        available = ", ".join(repr(name) for name in sorted(conv.CONV2D_KERNELS))
        assert {"auto", "im2col", "numba-im2col", "winograd", "cuda", "cupy"} <= set(conv.CONV2D_KERNELS)
        with pytest.raises(ValueError, match=re.escape(f"conv2d: unknown kernel 'no-such-kernel'; "
                                                       f"available kernels: {available}")):
            F.conv2d(x, weight)
        with pytest.raises(ValueError, match="available kernels"):
            F.conv_transpose2d(x, weight)


def test_the_selected_kernel_is_used(monkeypatch):
    calls = []

    class RecordingKernel(conv.Im2colKernel):
        @staticmethod
        def forward(x, weight, geometry):
            calls.append(weight.shape)
            return conv.Im2colKernel.forward(x, weight, geometry)

    monkeypatch.setitem(conv.CONV2D_KERNELS, "recording", RecordingKernel)
    x, weight, _ = make_inputs(21, (1, 2, 5, 5), (3, 2, 3, 3), None)
    with backend.use_kernel("conv2d", "recording"):
        y = F.conv2d(x, weight)
    assert calls == [(3, 2, 3, 3)]
    np.testing.assert_allclose(y.data, F.conv2d(x, weight).data, rtol=0, atol=0)
    assert len(calls) == 1


# ----- (f) bad input

X, W = np.zeros((1, 3, 8, 8)), np.zeros((8, 3, 3, 3))
TRANSPOSED_W = np.zeros((3, 4, 3, 3))

BAD_INPUTS = [
    (lambda: F.conv2d(np.zeros((3, 8, 8)), W), ValueError,
     r"conv2d: argument 'x' expected a 4-D tensor \(N, C, H, W\), got shape \(3, 8, 8\)"),
    (lambda: F.conv2d(X, np.zeros((8, 3, 3))), ValueError,
     r"conv2d: argument 'weight' expected a 4-D tensor \(C_out, C_in, kH, kW\), got shape \(8, 3, 3\)"),
    (lambda: F.conv2d(X.astype(np.int64), W), TypeError,
     r"conv2d: argument 'x' expected a floating-point tensor \(float32 or float64\), got dtype int64"),
    (lambda: F.conv2d(X, W.astype(bool)), TypeError, r"conv2d: argument 'weight' expected a floating-point"),
    (lambda: F.conv2d(X, W, np.zeros(8, dtype=np.int32)), TypeError, r"conv2d: argument 'bias' expected a floating"),
    (lambda: F.conv2d(X.astype(np.float32), W), TypeError,
     r"conv2d: expected all floating-point arguments to share one dtype, got 'x' float32, 'weight' float64"),
    (lambda: F.conv2d(X, np.zeros((8, 4, 3, 3))), ValueError,
     r"conv2d: input has 3 channels but weight expects 4 \(weight shape \(8, 4, 3, 3\)\)"),
    (lambda: F.conv2d(X, W, np.zeros(4)), ValueError,
     r"conv2d: argument 'bias' expected shape \(8,\) \(one value per output channel\), got shape \(4,\)"),
    (lambda: F.conv2d(X, W, np.zeros((8, 1))), ValueError, r"conv2d: argument 'bias' expected shape \(8,\)"),
    (lambda: F.conv2d(np.zeros((1, 3, 4, 4)), W, dilation=2), ValueError,
     r"conv2d: the dilated kernel \(5×5\) is larger than the padded input \(4×4\)"),
    (lambda: F.conv2d(np.zeros((1, 3, 2, 9)), W), ValueError,
     r"conv2d: the dilated kernel \(3×3\) is larger than the padded input \(2×9\)"),
    (lambda: F.conv2d(X, np.zeros((8, 3, 0, 3))), ValueError,
     r"conv2d: argument 'weight' expected a kernel of at least 1×1, got 0×3"),
    (lambda: F.conv2d(X, W, stride=0), ValueError, r"conv2d: argument 'stride' expected values >= 1, got \(0, 0\)"),
    (lambda: F.conv2d(X, W, stride=(1, 2, 3)), TypeError, r"conv2d: argument 'stride' expected an int or a pair"),
    (lambda: F.conv2d(X, W, dilation=(1, 0)), ValueError, r"conv2d: argument 'dilation' expected values >= 1"),
    (lambda: F.conv2d(X, W, padding=-1), ValueError, r"conv2d: argument 'padding' expected values >= 0"),
    (lambda: F.conv2d(X, W, padding=1.5), TypeError, r"conv2d: argument 'padding' expected an int or a pair"),
    (lambda: F.conv2d(X, W, padding="full"), ValueError,
     r"conv2d: argument 'padding' expected an int, a pair of ints, 'same' or 'valid', got 'full'"),
    (lambda: F.conv2d(X, W, stride=2, padding="same"), ValueError,
     r"conv2d: padding='same' requires stride 1 \(as PyTorch\), got stride \(2, 2\)"),
    (lambda: F.conv_transpose2d(np.zeros((3, 8, 8)), TRANSPOSED_W), ValueError,
     r"conv_transpose2d: argument 'x' expected a 4-D tensor"),
    (lambda: F.conv_transpose2d(X, np.zeros((3, 4, 3))), ValueError,
     r"conv_transpose2d: argument 'weight' expected a 4-D tensor \(C_in, C_out, kH, kW\)"),
    (lambda: F.conv_transpose2d(X.astype(np.float32), TRANSPOSED_W), TypeError,
     r"conv_transpose2d: expected all floating-point arguments to share one dtype"),
    (lambda: F.conv_transpose2d(X.astype(np.float16), TRANSPOSED_W.astype(np.float16)), TypeError,
     r"conv_transpose2d: argument 'x' expected a floating-point tensor \(float32 or float64\), got dtype float16"),
    (lambda: F.conv_transpose2d(X.astype(np.int8), TRANSPOSED_W), TypeError,
     r"conv_transpose2d: argument 'x' expected a floating-point tensor"),
    (lambda: F.conv_transpose2d(X, np.zeros((4, 3, 3, 3))), ValueError,
     r"conv_transpose2d: input has 3 channels but weight expects 4 \(weight shape \(4, 3, 3, 3\)\)"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, np.zeros(3)), ValueError,
     r"conv_transpose2d: argument 'bias' expected shape \(4,\)"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, stride=2, output_padding=2), ValueError,
     r"conv_transpose2d: argument 'output_padding' must be smaller than the stride or the dilation in each "
     r"dimension, got output_padding \(2, 2\) with stride \(2, 2\) and dilation \(1, 1\)"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, output_padding=(0, 1)), ValueError,
     r"conv_transpose2d: argument 'output_padding' must be smaller"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, output_padding=-1), ValueError,
     r"conv_transpose2d: argument 'output_padding' expected values >= 0"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, padding=6), ValueError,
     r"conv_transpose2d: the output would be empty"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, padding="same"), TypeError,
     r"conv_transpose2d: argument 'padding' expected an int or a pair of ints, got 'same'"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, stride=0), ValueError,
     r"conv_transpose2d: argument 'stride' expected values >= 1"),
    (lambda: F.conv_transpose2d(X, TRANSPOSED_W, dilation=0), ValueError,
     r"conv_transpose2d: argument 'dilation' expected values >= 1"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUTS, ids=[m[:60] for _, _, m in BAD_INPUTS])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
