"""Tests of tinyseg.reference, the naive implementations the engine is checked against.

The references are the ground truth, so they get their own proof, from three
independent directions:

1. tiny cases computed by hand, written out as literal arrays;
2. mathematical identities (identity kernel, adjointness of the transposed conv);
3. agreement with PyTorch in float64 (skipped when torch is not installed;
   only the tests that take the ``torch`` fixture need it).
"""
import math

import numpy as np
import pytest

from tinyseg import reference as ref

# 1 2 3
# 4 5 6
# 7 8 9
X3 = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
# 1 2
# 3 4
K2 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def assert_close(actual, expected, atol=1e-10):
    actual = np.asarray(actual)
    assert actual.dtype == np.float64
    assert actual.shape == np.shape(expected)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol)


# ----------------------------------------------------------------------------
# 1. Hand-computed cases
# ----------------------------------------------------------------------------


def test_conv2d_by_hand():
    # y[i,j] = 1·x[i,j] + 2·x[i,j+1] + 3·x[i+1,j] + 4·x[i+1,j+1], plus bias 0.5:
    # y[0,0] = 1 + 4 + 12 + 20 = 37    y[0,1] = 2 + 6 + 15 + 24 = 47
    # y[1,0] = 4 + 10 + 21 + 32 = 67   y[1,1] = 5 + 12 + 24 + 36 = 77
    y = ref.conv2d(X3, K2, bias=np.array([0.5]))
    assert_close(y, [[[[37.5, 47.5], [67.5, 77.5]]]])


def test_conv2d_stride_2_padding_1_by_hand():
    # H' = ⌊(3 + 2 − 2)/2⌋ + 1 = 2. Output row i reads input rows 2i − 1 + u, u ∈ {0, 1}:
    # rows {−1, 0} and {1, 2}; columns alike. Row/column −1 is zero padding.
    # y[0,0] = 4·x[0,0] = 4
    # y[0,1] = 3·x[0,1] + 4·x[0,2] = 6 + 12 = 18
    # y[1,0] = 2·x[1,0] + 4·x[2,0] = 8 + 28 = 36
    # y[1,1] = 1·5 + 2·6 + 3·8 + 4·9 = 77
    y = ref.conv2d(X3, K2, stride=2, padding=1)
    assert_close(y, [[[[4.0, 18.0], [36.0, 77.0]]]])


def test_conv2d_dilation_2_by_hand():
    # The 2×2 kernel dilated by 2 covers the 3×3 input's corners:
    # y = 1·x[0,0] + 2·x[0,2] + 3·x[2,0] + 4·x[2,2] = 1 + 6 + 21 + 36 = 64
    y = ref.conv2d(X3, K2, dilation=2)
    assert_close(y, [[[[64.0]]]])


def test_conv2d_same_padding_even_kernel_pads_bottom_right():
    # Total padding d·(k − 1) = 1 per dimension: 0 at the top/left, 1 at the
    # bottom/right, so y[i,j] = Σ W[u,v]·x[i+u, j+v] with x = 0 past the edge.
    # y[0,2] = 1·3 + 3·6 = 21   y[1,2] = 1·6 + 3·9 = 33
    # y[2,0] = 1·7 + 2·8 = 23   y[2,1] = 1·8 + 2·9 = 26   y[2,2] = 1·9 = 9
    y = ref.conv2d(X3, K2, padding="same")
    assert_close(y, [[[[37.0, 47.0, 21.0], [67.0, 77.0, 33.0], [23.0, 26.0, 9.0]]]])


def test_conv2d_same_padding_rejects_stride():
    with pytest.raises(ValueError):
        ref.conv2d(X3, K2, stride=2, padding="same")


def test_conv_transpose2d_stride_2_by_hand():
    # Stride 2 with a 2×2 kernel: the kernel copies do not overlap,
    # y[2i+u, 2j+v] = x[i,j]·W[u,v].
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    y = ref.conv_transpose2d(x, w, stride=2)
    expected = [
        [1.0, 10.0, 2.0, 20.0],
        [100.0, 1000.0, 200.0, 2000.0],
        [3.0, 30.0, 4.0, 40.0],
        [300.0, 3000.0, 400.0, 4000.0],
    ]
    assert_close(y, [[expected]])


def test_conv_transpose2d_overlapping_and_padding_by_hand():
    # Stride 1: y[r,q] = Σ x[i,j]·W[r−i, q−j]; the copies overlap:
    # y[0,1] = 1·10 + 2·1 = 12            y[1,0] = 1·100 + 3·1 = 103
    # y[1,1] = 1·1000 + 2·100 + 3·10 + 4·1 = 1234
    # y[1,2] = 2·1000 + 4·10 = 2040       y[2,1] = 3·1000 + 4·100 = 3400
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    w = np.array([[[[1.0, 10.0], [100.0, 1000.0]]]])
    expected = [[1.0, 12.0, 20.0], [103.0, 1234.0, 2040.0], [300.0, 3400.0, 4000.0]]
    assert_close(ref.conv_transpose2d(x, w), [[expected]])
    # padding 1 crops one row/column off each side: H' = (2 − 1) − 2 + 1 + 1 = 1.
    assert_close(ref.conv_transpose2d(x, w, padding=1), [[[[1234.0]]]])
    # output_padding 1 (allowed with stride 2) adds one zero row/column at the bottom/right.
    y = ref.conv_transpose2d(x, w, stride=2, output_padding=1, bias=np.array([0.5]))
    assert y.shape == (1, 1, 5, 5)
    assert_close(y[0, 0, 4, :], np.full(5, 0.5))
    assert_close(y[0, 0, :, 4], np.full(5, 0.5))


def test_conv_transpose2d_rejects_output_padding_not_below_stride_or_dilation():
    with pytest.raises(ValueError):
        ref.conv_transpose2d(X3, K2, stride=2, output_padding=2)


def test_max_pool2d_padding_is_minus_infinity():
    # All values negative: if the padding counted as 0 it would win every border window.
    # Windows (stride 2, padding 1): rows {−1,0}, {1,2}; columns alike.
    x = -X3
    y = ref.max_pool2d(x, kernel_size=2, stride=2, padding=1)
    assert_close(y, [[[[-1.0, -2.0], [-4.0, -5.0]]]])


def test_max_pool2d_default_stride_is_kernel_size_and_floor():
    # 5×5 with kernel 2: ⌊(5 − 2)/2⌋ + 1 = 2, the last row/column is never read.
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    assert_close(ref.max_pool2d(x, 2), [[[[6.0, 8.0], [16.0, 18.0]]]])


def test_max_pool2d_propagates_nan():
    x = np.array([[[[1.0, np.nan], [3.0, 4.0]]]])
    assert np.isnan(ref.max_pool2d(x, 2)[0, 0, 0, 0])


def test_pool_rejects_padding_over_half_kernel():
    with pytest.raises(ValueError):
        ref.max_pool2d(X3, 2, padding=2)
    with pytest.raises(ValueError):
        ref.avg_pool2d(X3, 3, padding=2)


def test_avg_pool2d_border_divisor_counts_padding():
    # Same windows as the max-pool case; the divisor is always 2·2 = 4:
    # y[0,0] = 1/4   y[0,1] = (2 + 3)/4 = 1.25   y[1,0] = (4 + 7)/4 = 2.75
    # y[1,1] = (5 + 6 + 8 + 9)/4 = 7
    y = ref.avg_pool2d(X3, kernel_size=2, stride=2, padding=1)
    assert_close(y, [[[[0.25, 1.25], [2.75, 7.0]]]])
    # A 3×3 window over a 3×3 image of ones, padding 1: corners see 4 ones,
    # edges 6, the centre 9, always divided by 9.
    y = ref.avg_pool2d(np.ones((1, 1, 3, 3)), kernel_size=3, stride=1, padding=1)
    assert_close(y, [[[[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1.0, 6 / 9], [4 / 9, 6 / 9, 4 / 9]]]])


X2 = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])


def test_upsample_nearest_by_hand():
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert_close(ref.upsample_nearest(X2, 2), [[expected]])
    # Different factors per dimension: rows ×1, columns ×3.
    assert_close(ref.upsample_nearest(X2, (1, 3)), [[[[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]]]])


def test_upsample_bilinear_half_pixel_by_hand():
    # align_corners=False: src = (dst + 0.5)/2 − 0.5 = −0.25 → 0, 0.25, 0.75, 1.25.
    # At 1.25, i0 = 1 and i1 = min(2, 1) = 1: the edge repeats.
    # Columns of row [1, 2]: 1, 1.25, 1.75, 2; row [3, 4] is the same plus 2;
    # rows blend with weights 0, 0.25, 0.75, 1 on the second row: add 0, 0.5, 1.5, 2.
    expected = [
        [1.0, 1.25, 1.75, 2.0],
        [1.5, 1.75, 2.25, 2.5],
        [2.5, 2.75, 3.25, 3.5],
        [3.0, 3.25, 3.75, 4.0],
    ]
    assert_close(ref.upsample_bilinear(X2, 2, align_corners=False), [[expected]])


def test_upsample_bilinear_align_corners_by_hand():
    # align_corners=True: src = dst·(2 − 1)/(4 − 1) = 0, 1/3, 2/3, 1; corners are kept.
    # Columns of row [1, 2]: 3/3, 4/3, 5/3, 6/3; each row step adds 2/3.
    expected = np.array([[3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9, 10], [9, 10, 11, 12]]) / 3
    assert_close(ref.upsample_bilinear(X2, 2, align_corners=True), [[expected]])


def test_center_crop_offsets_floor_odd_differences():
    x = np.arange(30.0).reshape(1, 1, 5, 6)
    # 5 → 2: top = ⌊3/2⌋ = 1; 6 → 3: left = ⌊3/2⌋ = 1. Rows 1..2, columns 1..3.
    assert_close(ref.center_crop(x, (2, 3)), [[[[7.0, 8.0, 9.0], [13.0, 14.0, 15.0]]]])
    # 5 → 4: top = ⌊1/2⌋ = 0; 6 → 4: left = 1.
    assert_close(ref.center_crop(x, 4), x[:, :, 0:4, 1:5])
    # Even difference: symmetric. Same size: identity.
    assert_close(ref.center_crop(x, (3, 4)), x[:, :, 1:4, 1:5])
    assert_close(ref.center_crop(x, (5, 6)), x)
    with pytest.raises(ValueError):
        ref.center_crop(x, (6, 6))


def test_batch_norm_training_by_hand():
    # One channel, values 1, 2, 3, 6: μ = 3, biased σ² = (4 + 1 + 0 + 9)/4 = 3.5,
    # unbiased = 14/3. Running stats start at (0, 1):
    # new mean = 0.9·0 + 0.1·3 = 0.3;  new var = 0.9·1 + 0.1·14/3 = 1.3666…
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    running_mean, running_var = np.array([0.0]), np.array([1.0])
    y, new_mean, new_var = ref.batch_norm(
        x, running_mean, running_var, np.array([2.0]), np.array([0.5]), training=True
    )
    assert_close(y, (x - 3.0) / np.sqrt(3.5 + 1e-5) * 2.0 + 0.5)
    assert_close(new_mean, [0.3])
    assert_close(new_var, [0.9 + 0.1 * 14 / 3])
    # The inputs are not modified.
    assert running_mean[0] == 0.0 and running_var[0] == 1.0


def test_batch_norm_eval_uses_running_stats():
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    running_mean, running_var = np.array([1.0]), np.array([4.0])
    y, new_mean, new_var = ref.batch_norm(x, running_mean, running_var, None, None, training=False, eps=0.0)
    assert_close(y, (x - 1.0) / 2.0)
    assert_close(new_mean, running_mean)
    assert_close(new_var, running_var)
    # Fresh arrays: changing the result does not reach the caller's buffers.
    new_mean[0] = 99.0
    assert running_mean[0] == 1.0


def test_batch_norm_training_without_running_stats():
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(2, 1, 1, 2)
    y, new_mean, new_var = ref.batch_norm(x, None, None, None, None, training=True)
    assert new_mean is None and new_var is None
    assert_close(y.mean(), 0.0)


def test_softmax_log_softmax_sigmoid_by_hand():
    logits = np.log(np.array([[1.0, 1.0, 2.0], [2.0, 1.0, 1.0]]))
    assert_close(ref.softmax(logits), [[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]])
    assert_close(ref.log_softmax(logits), np.log([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]]))
    assert_close(ref.softmax(logits.T, axis=0), [[0.25, 0.5], [0.25, 0.25], [0.5, 0.25]])
    # Huge logits: no overflow, and log_softmax stays finite where softmax underflows.
    assert_close(ref.softmax(np.array([[1000.0, 0.0]])), [[1.0, 0.0]])
    assert_close(ref.log_softmax(np.array([[1000.0, 0.0]])), [[0.0, -1000.0]])
    assert_close(ref.sigmoid(np.array([0.0, math.log(3.0), -1000.0, 1000.0])), [0.5, 0.75, 0.0, 1.0])


def test_bce_with_logits_by_hand():
    # At z = 0, σ = 1/2, so every term is log 2 (times pw for positive targets).
    z = np.zeros(4)
    t = np.array([1.0, 0.0, 1.0, 0.5])
    assert_close(ref.binary_cross_entropy_with_logits(z, t), math.log(2.0))
    # pos_weight 3 triples the t·log σ part: (3 + 1 + 3 + (1.5 + 0.5))/4 · log 2 = 2.25 log 2.
    assert_close(ref.binary_cross_entropy_with_logits(z, t, pos_weight=3.0), 2.25 * math.log(2.0))
    # weight scales each element: (1 + 0 + 0 + 1)/4 · log 2.
    w = np.array([1.0, 0.0, 0.0, 1.0])
    assert_close(ref.binary_cross_entropy_with_logits(z, t, weight=w), 0.5 * math.log(2.0))
    # Confidently wrong logits: the loss is |z| exactly, not inf.
    big = np.array([1000.0, -1000.0])
    assert_close(ref.binary_cross_entropy_with_logits(big, np.array([0.0, 1.0])), 1000.0)
    assert_close(ref.binary_cross_entropy_with_logits(big, np.array([1.0, 0.0])), 0.0)


def test_cross_entropy_weights_and_ignore_index_by_hand():
    # Softmax rows (1/4, 1/4, 1/2) and (1/2, 1/4, 1/4); targets 2 and 1:
    # per-element losses −log(1/2) = log 2 and −log(1/4) = 2 log 2.
    logits = np.log(np.array([[1.0, 1.0, 2.0], [2.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    target = np.array([2, 1, -1])
    log2 = math.log(2.0)
    # The third element is ignored (its target −1 is not a class at all).
    assert_close(ref.cross_entropy(logits, target, ignore_index=-1), (log2 + 2 * log2) / 2)
    # Class weights (1, 2, 3): w[t] = 3, 2. Weighted mean = (3·log 2 + 2·2 log 2)/(3 + 2).
    weight = np.array([1.0, 2.0, 3.0])
    assert_close(ref.cross_entropy(logits, target, weight=weight, ignore_index=-1), 7 / 5 * log2)
    # Ignoring class 1 as well leaves the first element alone: 3 log 2 / 3.
    target = np.array([2, 1, 1])
    assert_close(ref.cross_entropy(logits, target, weight=weight, ignore_index=1), log2)
    # Nothing left to average: 0/0 = NaN.
    assert np.isnan(ref.cross_entropy(logits, np.array([1, 1, 1]), ignore_index=1))


def test_cross_entropy_rejects_out_of_range_target():
    with pytest.raises(IndexError):
        ref.cross_entropy(np.zeros((1, 3)), np.array([3]))


def test_dice_loss_by_hand():
    # Logits 0 → p = 1/2 on 4 pixels, 2 of them foreground:
    # Σ p·t = 1, Σ p = 2, Σ t = 2: D = (2 + 1)/(2 + 2 + 1) = 0.6, loss = 0.4.
    logits = np.zeros((1, 1, 2, 2))
    target = np.array([[[[1, 0], [0, 1]]]])
    assert_close(ref.dice_loss(logits, target), 0.4)
    # (N, H, W) targets work the same as (N, 1, H, W).
    assert_close(ref.dice_loss(logits, target[:, 0]), 0.4)
    # smooth = 0: D = 2/4.
    assert_close(ref.dice_loss(logits, target, smooth=0.0), 0.5)


def test_dice_loss_multiclass_by_hand():
    # Uniform softmax over 2 classes (p = 1/2 everywhere), target classes 0, 0, 0, 1:
    # class 0: (2·1.5 + 1)/(2 + 3 + 1) = 4/6; class 1: (2·0.5 + 1)/(2 + 1 + 1) = 2/4.
    logits = np.zeros((1, 2, 2, 2))
    target = np.array([[[0, 0], [0, 1]]])
    assert_close(ref.dice_loss(logits, target), 1 - (4 / 6 + 2 / 4) / 2)


def test_dice_loss_perfect_prediction_is_zero(rng):
    target = rng.integers(0, 2, size=(2, 1, 5, 4))
    assert_close(ref.dice_loss(100.0 * (2 * target - 1), target), 0.0)
    classes = rng.integers(0, 3, size=(2, 5, 4))
    one_hot = np.stack([classes == c for c in range(3)], axis=1).astype(float)
    assert_close(ref.dice_loss(100.0 * one_hot, classes), 0.0)


def test_mse_loss_by_hand():
    assert_close(ref.mse_loss([1.0, 2.0, 3.0], [1.0, 0.0, 6.0]), (0 + 4 + 9) / 3)


def test_weight_map_single_object_is_class_balance_only():
    # A 2×2 object in 5×5: frequencies 4/25 (foreground) and 21/25 (background).
    # Inverse frequencies 25/4 and 25/21, divided by the larger: 1 and 4/21.
    mask = np.zeros((5, 5), dtype=int)
    mask[1:3, 1:3] = 1
    expected = np.where(mask > 0, 1.0, 4 / 21)
    assert_close(ref.weighted_map_unet(mask), expected)
    # A 0/1 mask is one object even if split in parts: still no border term.
    mask[4, 4] = 1
    weights = ref.weighted_map_unet(mask, class_weights=(1.0, 1.0))
    assert_close(weights, np.ones((5, 5)))


def test_weight_map_border_term_between_two_objects():
    # Columns: 0-1 object 1, 2 a one-pixel gap, 3-4 object 2, 5-6 background.
    mask = np.zeros((3, 7), dtype=int)
    mask[:, 0:2] = 1
    mask[:, 3:5] = 2
    w0, sigma = 10.0, 1.0
    weights = ref.weighted_map_unet(mask, w0=w0, sigma=sigma, class_weights=(1.0, 2.0))
    # Object pixels: the class weight alone.
    assert_close(weights[:, [0, 1, 3, 4]], np.full((3, 4), 2.0))
    # Gap: d1 = d2 = 1, border term w0·exp(−(1 + 1)²/2).
    assert_close(weights[:, 2], np.full(3, 1.0 + w0 * math.exp(-4 / 2)))
    # Column 5: d1 = 1 (object 2), d2 = 4 (object 1). Column 6: d1 = 2, d2 = 5.
    assert_close(weights[:, 5], np.full(3, 1.0 + w0 * math.exp(-25 / 2)))
    assert_close(weights[:, 6], np.full(3, 1.0 + w0 * math.exp(-49 / 2)))


def test_weight_map_diagonal_distance_is_euclidean():
    # Objects at (0,0) and (2,2); the background pixel (1,1) is √2 from each.
    mask = np.zeros((3, 3), dtype=int)
    mask[0, 0], mask[2, 2] = 1, 2
    weights = ref.weighted_map_unet(mask, w0=1.0, sigma=2.0, class_weights=(0.0, 0.0))
    assert_close(weights[1, 1], math.exp(-((2 * math.sqrt(2)) ** 2) / 8))
    # (0,2): √(0² + 2²) = 2 from both objects.
    assert_close(weights[0, 2], math.exp(-16 / 8))


# ----------------------------------------------------------------------------
# 2. Identities
# ----------------------------------------------------------------------------


def test_conv2d_identity_kernel_returns_input(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    identity = np.eye(3).reshape(3, 3, 1, 1)
    assert_close(ref.conv2d(x, identity), x)


ADJOINT_CASES = [
    # (H, W, kH, kW, stride, padding, dilation)
    (5, 5, 3, 3, 1, 0, 1),
    (6, 7, 3, 3, 2, 1, 1),
    (7, 6, 2, 3, 3, (1, 0), 1),
    (7, 7, 3, 2, 1, 2, 2),
    (8, 7, 3, 3, (2, 3), 1, (2, 1)),
]


@pytest.mark.parametrize("H, W, kH, kW, stride, padding, dilation", ADJOINT_CASES)
def test_conv_transpose2d_is_adjoint_of_conv2d(rng, H, W, kH, kW, stride, padding, dilation):
    N, C, O = 2, 2, 3
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, kH, kW))
    y = ref.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    g = rng.standard_normal(y.shape)
    # output_padding restores the rows/columns the strided conv2d skipped.
    sh, sw = ref._pair(stride)
    ph, pw = ref._pair(padding)
    dh, dw = ref._pair(dilation)
    output_padding = (
        (H + 2 * ph - dh * (kH - 1) - 1) % sh,
        (W + 2 * pw - dw * (kW - 1) - 1) % sw,
    )
    # The same weight serves both: (O, C, kH, kW) is (Cin, Cout, …) for the transpose.
    xt = ref.conv_transpose2d(
        g, w, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    assert xt.shape == x.shape
    assert_close(np.vdot(y, g), np.vdot(x, xt))


# ----------------------------------------------------------------------------
# 3. Agreement with PyTorch (float64)
# ----------------------------------------------------------------------------


def t64(torch, a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


CONV_CASES = [
    # (N, C, O, H, W, kH, kW, stride, padding, dilation, bias)
    (2, 3, 4, 6, 5, 3, 3, 1, 0, 1, True),
    (1, 2, 3, 8, 9, 3, 2, 2, 1, 1, True),
    (2, 2, 2, 9, 7, 2, 3, 3, (1, 2), 1, False),
    (1, 3, 2, 9, 9, 3, 3, 1, 2, 2, True),
    (1, 2, 3, 7, 8, 3, 2, (2, 3), (0, 1), (2, 1), True),
    (1, 2, 2, 7, 6, 2, 2, 1, "same", 2, True),
    (1, 2, 2, 5, 6, 3, 2, 1, "same", 1, False),
    (1, 2, 2, 5, 6, 3, 3, 1, "valid", 1, True),
]


# PyTorch warns that it copies the input for an even "same" kernel; harmless here.
@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("N, C, O, H, W, kH, kW, stride, padding, dilation, bias", CONV_CASES)
def test_conv2d_matches_torch(torch, rng, N, C, O, H, W, kH, kW, stride, padding, dilation, bias):
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C, kH, kW))
    b = rng.standard_normal(O) if bias else None
    expected = torch.nn.functional.conv2d(
        t64(torch, x), t64(torch, w), None if b is None else t64(torch, b),
        stride=stride, padding=padding, dilation=dilation,
    )
    actual = ref.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)
    assert_close(actual, expected.numpy())


CONV_TRANSPOSE_CASES = [
    # (N, Cin, Cout, H, W, kH, kW, stride, padding, output_padding, dilation, bias)
    (2, 3, 2, 4, 5, 3, 3, 1, 0, 0, 1, True),
    (1, 2, 3, 3, 4, 3, 2, 2, 1, 1, 1, True),
    (1, 2, 2, 3, 3, 2, 3, 3, (1, 0), (2, 1), 1, False),
    (1, 2, 2, 4, 3, 3, 3, 2, 1, 1, 2, True),
    (1, 2, 2, 3, 4, 2, 3, (2, 3), (0, 1), (1, 2), 1, True),
    (1, 2, 2, 4, 4, 3, 3, 1, 1, 1, 2, False),  # output_padding < dilation, stride 1
    (2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 1, True),  # the U-Net up-convolution
]


@pytest.mark.parametrize(
    "N, Cin, Cout, H, W, kH, kW, stride, padding, output_padding, dilation, bias",
    CONV_TRANSPOSE_CASES,
)
def test_conv_transpose2d_matches_torch(
    torch, rng, N, Cin, Cout, H, W, kH, kW, stride, padding, output_padding, dilation, bias
):
    x = rng.standard_normal((N, Cin, H, W))
    w = rng.standard_normal((Cin, Cout, kH, kW))
    b = rng.standard_normal(Cout) if bias else None
    expected = torch.nn.functional.conv_transpose2d(
        t64(torch, x), t64(torch, w), None if b is None else t64(torch, b),
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation,
    )
    actual = ref.conv_transpose2d(
        x, w, b, stride=stride, padding=padding, output_padding=output_padding, dilation=dilation
    )
    assert_close(actual, expected.numpy())


POOL_CASES = [
    # (kernel_size, stride, padding)
    (2, None, 0),
    (3, 2, 1),
    ((3, 2), (2, 3), (1, 0)),
    (3, 3, 1),
    (2, 1, 1),
    ((1, 3), None, (0, 1)),
]


@pytest.mark.parametrize("kernel_size, stride, padding", POOL_CASES)
def test_pooling_matches_torch(torch, rng, kernel_size, stride, padding):
    # Shift the data negative so a padding treated as 0 would show up in max-pool.
    x = rng.standard_normal((2, 2, 7, 8)) - 3.0
    F = torch.nn.functional
    expected_max = F.max_pool2d(t64(torch, x), kernel_size, stride, padding)
    expected_avg = F.avg_pool2d(t64(torch, x), kernel_size, stride, padding)
    assert_close(ref.max_pool2d(x, kernel_size, stride, padding), expected_max.numpy())
    assert_close(ref.avg_pool2d(x, kernel_size, stride, padding), expected_avg.numpy())


@pytest.mark.parametrize("scale_factor", [1, 2, 3, (2, 3), (3, 1)])
def test_upsample_nearest_matches_torch(torch, rng, scale_factor):
    x = rng.standard_normal((2, 2, 3, 5))
    expected = torch.nn.functional.interpolate(t64(torch, x), scale_factor=scale_factor, mode="nearest")
    assert_close(ref.upsample_nearest(x, scale_factor), expected.numpy())


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("scale_factor", [2, 3, 1.5, (2, 3), 0.5, (1.7, 0.6)])
def test_upsample_bilinear_matches_torch(torch, rng, scale_factor, align_corners):
    x = rng.standard_normal((1, 2, 5, 4))
    expected = torch.nn.functional.interpolate(
        t64(torch, x), scale_factor=scale_factor, mode="bilinear", align_corners=align_corners
    )
    assert_close(ref.upsample_bilinear(x, scale_factor, align_corners), expected.numpy())


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_matches_torch(torch, rng, training, affine):
    C = 3
    x = rng.standard_normal((2, C, 3, 5)) * 2.0 + 1.0
    running_mean = rng.standard_normal(C)
    running_var = rng.uniform(0.5, 2.0, C)
    weight = rng.standard_normal(C) if affine else None
    bias = rng.standard_normal(C) if affine else None
    # PyTorch updates its running buffers in place: give it copies.
    torch_mean, torch_var = t64(torch, running_mean).clone(), t64(torch, running_var).clone()
    expected = torch.nn.functional.batch_norm(
        t64(torch, x), torch_mean, torch_var,
        None if weight is None else t64(torch, weight), None if bias is None else t64(torch, bias),
        training=training, momentum=0.3, eps=1e-4,
    )
    y, new_mean, new_var = ref.batch_norm(
        x, running_mean, running_var, weight, bias, training, momentum=0.3, eps=1e-4
    )
    assert_close(y, expected.numpy())
    assert_close(new_mean, torch_mean.numpy())
    assert_close(new_var, torch_var.numpy())


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_and_log_softmax_match_torch(torch, rng, axis):
    x = rng.standard_normal((2, 4, 3, 5)) * 5.0
    F = torch.nn.functional
    assert_close(ref.softmax(x, axis), F.softmax(t64(torch, x), dim=axis).numpy())
    assert_close(ref.log_softmax(x, axis), F.log_softmax(t64(torch, x), dim=axis).numpy())
    assert_close(ref.sigmoid(x), torch.sigmoid(t64(torch, x)).numpy())


@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("pos_weight_shape", [None, (), (3, 1, 1)])
def test_bce_with_logits_matches_torch(torch, rng, use_weight, pos_weight_shape):
    logits = rng.standard_normal((2, 3, 4, 5)) * 4.0
    target = rng.uniform(0.0, 1.0, logits.shape)  # soft targets are allowed
    target[0] = np.round(target[0])
    weight = rng.uniform(0.0, 2.0, (1, 3, 1, 5)) if use_weight else None
    pos_weight = None if pos_weight_shape is None else rng.uniform(0.5, 4.0, pos_weight_shape)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        t64(torch, logits), t64(torch, target),
        weight=None if weight is None else t64(torch, weight),
        pos_weight=None if pos_weight is None else t64(torch, pos_weight),
    )
    actual = ref.binary_cross_entropy_with_logits(logits, target, weight, pos_weight)
    assert_close(actual, expected.item())


@pytest.mark.parametrize("shape", [(3, 4), (2, 4, 3, 5)])
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2, -1])
def test_cross_entropy_matches_torch(torch, rng, shape, use_weight, ignore_index):
    C = shape[1]
    logits = rng.standard_normal(shape) * 3.0
    target = rng.integers(0, C, (shape[0],) + shape[2:])
    if ignore_index == -1:
        target.flat[::3] = -1  # an ignore label outside the class range
    weight = rng.uniform(0.2, 3.0, C) if use_weight else None
    expected = torch.nn.functional.cross_entropy(
        t64(torch, logits), torch.from_numpy(target),
        weight=None if weight is None else t64(torch, weight),
        ignore_index=-100 if ignore_index is None else ignore_index,
    )
    actual = ref.cross_entropy(logits, target, weight, ignore_index)
    assert_close(actual, expected.item())
