"""Ops with compiled kernels take float32 and float64 only: other dtypes fail up front, by name.

(Numba kernels exist for those two; a float16 array large enough for "auto" to pick a
compiled kernel used to fail inside Numba with a bare NotImplementedError.)
"""
import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F

OPS = {
    "relu": F.relu,
    "max_pool2d": lambda t: F.max_pool2d(t, 2),
    "avg_pool2d": lambda t: F.avg_pool2d(t, 2),
    "upsample": lambda t: F.upsample(t, 2),
    "binary_cross_entropy_with_logits": lambda t: F.binary_cross_entropy_with_logits(t, t),
    "conv2d": lambda t: F.conv2d(t, ts.Tensor(np.zeros((2, 2, 3, 3), dtype=t.data.dtype)), padding=1),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", [np.float16, np.longdouble])
def test_unsupported_float_dtypes_are_a_clear_error(op, dtype):
    if np.dtype(dtype) == np.dtype(np.float64):
        pytest.skip("longdouble is float64 on this platform")
    x = ts.Tensor(np.zeros((1, 2, 64, 64), dtype=dtype))
    with pytest.raises(TypeError, match=rf"{op}: argument '\w+' expected a floating-point tensor "
                                        rf"\(float32 or float64\), got dtype {np.dtype(dtype)}"):
        OPS[op](x)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_supported_dtypes_are_kept(op, dtype):
    x = ts.Tensor(np.full((1, 2, 64, 64), 0.5, dtype=dtype))
    assert OPS[op](x).data.dtype == dtype
