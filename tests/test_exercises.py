"""The exercise checker: it accepts the engine and an independent loop solution, and it
rejects each common mistake, written here the way a learner would write it, with the
right hint, the case and the first wrong element."""
import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import exercises
from tinyseg.exercises import EXERCISES, ExerciseError, check, describe


def grads(op, arrays, upstream=None):
    tensors = [ts.Tensor(a, requires_grad=True) for a in arrays]
    op(*tensors).backward(upstream)
    return tuple(t.grad for t in tensors)


ENGINE = {
    "conv2d_forward": lambda x, w, b, s, p: F.conv2d(x, w, b, stride=s, padding=p).data,
    "conv2d_backward": lambda x, w, b, s, p, dy: grads(
        lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p), (x, w, b), dy),
    "max_pool2d_forward": lambda x, k, s: F.max_pool2d(x, k, stride=s).data,
    "max_pool2d_backward": lambda x, k, s, dy: grads(lambda x: F.max_pool2d(x, k, stride=s), (x,), dy)[0],
    "bce_with_logits_forward": lambda z, t: F.binary_cross_entropy_with_logits(z, t).item(),
    "bce_with_logits_backward": lambda z, t: grads(lambda z: F.binary_cross_entropy_with_logits(z, t), (z,))[0],
    "dice_forward": lambda z, t, smooth: F.dice_loss(z, t, smooth=smooth).item(),
    "dice_backward": lambda z, t, smooth: grads(lambda z: F.dice_loss(z, t, smooth=smooth), (z,))[0],
}


def test_every_exercise_has_an_engine_solution_here():
    assert set(ENGINE) == set(EXERCISES)


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_the_engine_passes_every_exercise(name):
    assert check(name, ENGINE[name]) is True


# ----- a learner's convolution, in loops, with switches for the usual mistakes

def conv_forward(x, w, b, stride, padding, flip=False, subtract_padding=False, sum_channels=False,
                 ignore_stride=False):
    N, C, H, W = x.shape
    O, _, kH, kW = w.shape
    if subtract_padding:                  # the article's (X_ij − p): values shifted, no zero border
        x, padding = x - padding, 0
    if flip:
        w = w[:, :, ::-1, ::-1]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kH) // stride + 1, (W + 2 * padding - kW) // stride + 1
    step = 1 if ignore_stride else stride
    y = np.zeros((N, O, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, step * i:step * i + kH, step * j:step * j + kW]
                    if sum_channels:
                        y[n, o, i, j] = b[o] + np.sum(window.sum(axis=0) * w[o].sum(axis=0))
                    else:
                        y[n, o, i, j] = b[o] + np.sum(window * w[o])
    return y


def conv_backward(x, w, b, stride, padding, dy, flip_dx=False, bias="sum", ignore_stride=False):
    N, C, H, W = x.shape
    O, _, kH, kW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    w_for_dx = w[:, :, ::-1, ::-1] if flip_dx else w
    step = 1 if ignore_stride else stride
    for n in range(N):
        for o in range(O):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    rows, cols = slice(step * i, step * i + kH), slice(step * j, step * j + kW)
                    dw[o] += dy[n, o, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dy[n, o, i, j] * w_for_dx[o]
    db = {"sum": dy.sum(axis=(0, 2, 3)), "first sample": dy[0].sum(axis=(1, 2)),
          "batch mean": dy.sum(axis=(0, 2, 3)) / N}[bias]
    return dxp[:, :, padding:padding + H, padding:padding + W], dw, db


def test_a_correct_loop_solution_passes():
    assert check("conv2d_forward", conv_forward)
    assert check("conv2d_backward", conv_backward)


@pytest.mark.parametrize("mistake, hint", [
    ({"flip": True}, "the kernel is flipped: this is a true convolution"),
    ({"subtract_padding": True}, "padding was subtracted from the pixel values (x − p)"),
    ({"sum_channels": True}, "channels summed too early"),
    ({"ignore_stride": True}, "the stride is ignored"),
])
def test_conv2d_forward_mistakes_get_their_hint(mistake, hint):
    with pytest.raises(ExerciseError) as caught:
        check("conv2d_forward", lambda *args: conv_forward(*args, **mistake))
    message = str(caught.value)
    assert f"hint: {hint}" in message
    assert "on case " in message and "x (" in message and "stride=" in message and "padding=" in message


def test_the_first_wrong_element_is_named_with_expected_and_got():
    with pytest.raises(ExerciseError) as caught:
        check("conv2d_forward", lambda *args: conv_forward(*args, flip=True))
    message = str(caught.value)
    # case 1 is 3×3 with padding 1: find the first differing element ourselves
    case = exercises.EXERCISES["conv2d_forward"].cases()[0]
    right, wrong = conv_forward(*case.args), conv_forward(*case.args, flip=True)
    index = tuple(int(i) for i in np.argwhere(~np.isclose(right, wrong))[0])
    assert f"first wrong element y[{', '.join(map(str, index))}]: expected {right[index]:.10g}, " \
           f"got {wrong[index]:.10g}" in message
    assert 'case 1 of 9, "3×3 kernel, padding 1, batch 2": x (2, 3, 5, 5), w (4, 3, 3, 3), b (4,), stride=1, ' \
           'padding=1, float64' in message


@pytest.mark.parametrize("mistake, hint", [
    ({"bias": "first sample"}, "the bias gradient is not summed over the batch"),
    ({"bias": "batch mean"}, "the bias gradient is averaged instead of summed"),
    ({"flip_dx": True}, "dx uses the kernel the wrong way round"),
    ({"ignore_stride": True}, "the stride is ignored"),
])
def test_conv2d_backward_mistakes_get_their_hint(mistake, hint):
    with pytest.raises(ExerciseError, match="hint: " + hint):
        check("conv2d_backward", lambda *args: conv_backward(*args, **mistake))


# ----- max pooling, losses

def pool_backward(x, k, s, dy, all_ties=False, overwrite=False):
    dx = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dy.shape[2]):
                for j in range(dy.shape[3]):
                    window = x[n, c, s * i:s * i + k, s * j:s * j + k]
                    winners = (np.argwhere(window == window.max()) if all_ties
                               else [np.unravel_index(window.argmax(), window.shape)])
                    for u, v in winners:
                        if overwrite:
                            dx[n, c, s * i + u, s * j + v] = dy[n, c, i, j]
                        else:
                            dx[n, c, s * i + u, s * j + v] += dy[n, c, i, j]
    return dx


def test_max_pool_backward_loop_solution_and_its_mistakes():
    assert check("max_pool2d_backward", pool_backward)
    with pytest.raises(ExerciseError, match=r"hint: on ties every maximum got the gradient") as caught:
        check("max_pool2d_backward", lambda *a: pool_backward(*a, all_ties=True))
    assert '"ties: values from {0, 1, 2}"' in str(caught.value)
    with pytest.raises(ExerciseError, match=r"hint: overlapping windows \(stride < kernel\) overwrite"):
        check("max_pool2d_backward", lambda *a: pool_backward(*a, overwrite=True))


def test_max_pool_forward_with_average_or_a_fixed_stride():
    def average(x, k, s):
        return np.stack([[x[:, :, s * i:s * i + k, s * j:s * j + k].mean(axis=(2, 3))
                          for j in range((x.shape[3] - k) // s + 1)] for i in range((x.shape[2] - k) // s + 1)]
                        ).transpose(2, 3, 0, 1)

    with pytest.raises(ExerciseError, match="hint: this is average pooling"):
        check("max_pool2d_forward", average)
    with pytest.raises(ExerciseError, match=r"wrong shape of y: expected \(1, 2, 3, 2\), got \(1, 2, 2, 1\).*"
                                            r"\n  hint: the stride is ignored"):
        check("max_pool2d_forward", lambda x, k, s: F.max_pool2d(x, k).data)


def test_bce_written_from_its_definition_overflows_and_is_told_why():
    def naive(z, t):
        p = 1 / (1 + np.exp(-z))
        return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))

    with np.errstate(all="ignore"), pytest.raises(ExerciseError) as caught:
        check("bce_with_logits_forward", naive)
    message = str(caught.value)
    assert "large logits" in message and ("got nan" in message or "got inf" in message)
    assert "hint: overflow" in message
    with pytest.raises(ExerciseError, match="hint: the 1/M of the mean is missing"):
        check("bce_with_logits_backward", lambda z, t: 1 / (1 + np.exp(-z)) - t)


def test_dice_backward_without_the_sigmoid_factor():
    def stops_at_p(z, t, smooth):
        p = 1 / (1 + np.exp(-z))
        inter, total = (p * t).sum(), p.sum() + t.sum() + smooth
        return -(2 * t * total - (2 * inter + smooth)) / total ** 2

    with pytest.raises(ExerciseError, match="hint: the chain rule stops at p"):
        check("dice_backward", stops_at_p)


# ----- what the learner's function returns, or does instead

def test_a_stub_is_reported_as_not_implemented():
    def stub(x, w, b, stride, padding):
        raise NotImplementedError

    with pytest.raises(ExerciseError, match=r"conv2d_forward: not implemented yet .* write conv2d_forward\(x, w, b, "
                                            r"stride, padding\) -> y"):
        check("conv2d_forward", stub)


def test_an_exception_names_its_type_and_the_case():
    with pytest.raises(ExerciseError, match=r"fn raised ZeroDivisionError: division by zero on case 1 of 9"):
        check("conv2d_forward", lambda *args: 1 / 0)


def test_wrong_dtype_wrong_shape_and_wrong_type():
    def float64_always(x, w, b, s, p):
        return conv_forward(x, w, b, s, p).astype(np.float64)

    with pytest.raises(ExerciseError, match=r"wrong dtype of y on case 9 of 9, \"float32 input\".*expected float32 "
                                            r"\(the inputs' dtype\), got float64"):
        check("conv2d_forward", float64_always)
    with pytest.raises(ExerciseError, match=r"wrong shape of y: expected \(2, 4, 5, 5\), got \(2, 4, 3, 3\)"):
        check("conv2d_forward", lambda x, w, b, s, p: conv_forward(x, w, b, s, 0))
    with pytest.raises(ExerciseError, match=r"expected a tuple \(dx, dw, db\) .*got a tuple of 2 items"):
        check("conv2d_backward", lambda *args: conv_backward(*args)[:2])
    with pytest.raises(ExerciseError, match="expected loss to be a number .* got an array of shape"):
        check("dice_forward", lambda z, t, smooth: np.zeros(3))


def test_changing_an_input_in_place_is_refused():
    def in_place(x, w, b, s, p):
        x += 0
        x[0, 0, 0, 0] = 7.0
        return conv_forward(x, w, b, s, p)

    with pytest.raises(ExerciseError, match="changed its input x in place"):
        check("conv2d_forward", in_place)


def test_an_unrecognised_mistake_gets_no_invented_hint():
    with pytest.raises(ExerciseError) as caught:
        check("conv2d_forward", lambda *args: conv_forward(*args) + 1e-3)
    assert "hint:" not in str(caught.value)


def test_names_and_descriptions():
    assert "y[n,o,i,j] = b[o] + Σ_c Σ_u Σ_v w[o,c,u,v]" in describe("conv2d_forward")
    assert describe("conv2d_backward").startswith("conv2d_backward(x, w, b, stride, padding, dy) -> (dx, dw, db)")
    with pytest.raises(KeyError, match="no exercise named 'conv3d'.*conv2d_forward"):
        check("conv3d", conv_forward)
    with pytest.raises(TypeError, match="'fn' expected a function"):
        check("conv2d_forward", None)
