"""tinyseg.cuda.trace: the thread that wrote each output, from the real kernels replayed in the emulation."""
import numpy as np
import pytest

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg.cuda.trace import LaunchCall, record_launches, thread_owners


def test_a_grid_stride_loop_gives_thread_t_the_elements_t_t_plus_16_and_so_on():
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    call = LaunchCall("activation.cu", "relu_forward", np.dtype(np.float32), (2, 1, 1), (8, 1, 1),
                      (x, np.empty_like(x), np.int64(x.size)), 0)
    owners = thread_owners(call)
    assert list(owners) == [1]                                   # only y was written
    np.testing.assert_array_equal(owners[1], np.arange(40) % 16)


def test_conv_v1_gives_each_output_its_own_thread_and_the_replay_keeps_the_launch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 12, 12)).astype(np.float32)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    with backend.use_kernel("conv2d", "cuda_v1"):
        calls = record_launches(lambda: F.conv2d(ts.Tensor(x), ts.Tensor(w), padding=1))
    assert [c.kernel for c in calls] == ["conv2d_v1_forward"]
    call = calls[0]
    assert call.grid == (2, 1, 1) and call.block == (256, 1, 1) and call.threads_per_block == 256
    owner = thread_owners(call)[2]
    np.testing.assert_array_equal(owner.ravel(), np.arange(2 * 12 * 12))    # flat index = global thread


def test_conv_v2_gives_a_thread_the_same_pixel_in_each_channel_of_its_group():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 20, 20)).astype(np.float32)
    w = rng.standard_normal((9, 1, 3, 3)).astype(np.float32)
    with backend.use_kernel("conv2d", "cuda_v2"):
        call = record_launches(lambda: F.conv2d(ts.Tensor(x), ts.Tensor(w), padding=1))[0]
    owner = thread_owners(call)[2][0]
    assert (owner >= 0).all()
    np.testing.assert_array_equal(owner[0], owner[7])        # one group of 8 channels: the same threads
    assert not np.intersect1d(owner[0], owner[8]).size       # the ninth channel: other blocks
    blocks = owner[0] // call.threads_per_block
    assert len(np.unique(blocks)) == call.grid[0] * call.grid[1]      # one block per output tile


def test_only_float32_launches_are_traced():
    call = LaunchCall("activation.cu", "relu_forward", np.dtype(np.float64), (1, 1, 1), (8, 1, 1),
                      (np.zeros(8), np.zeros(8), np.int64(8)), 0)
    with pytest.raises(TypeError, match="float32"):
        thread_owners(call)


def test_max_pool_backward_replays_with_its_winner_type_and_gives_each_dx_its_own_thread():
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 8)).astype(np.float32)

    def forward_backward():
        y = F.max_pool2d(ts.Tensor(x, requires_grad=True), 2)
        y.backward(np.ones(y.shape, np.float32))

    with backend.use_kernel("max_pool2d", "cuda"):
        calls = record_launches(forward_backward)
    assert [(c.kernel, c.index_dtype) for c in calls] == [("max_pool2d_forward", np.dtype(np.uint8)),
                                                          ("max_pool2d_backward", np.dtype(np.uint8))]
    owners = thread_owners(calls[1])                             # (grad, winner, dx, sizes...)
    assert list(owners) == [2]                                   # dx alone was written
    np.testing.assert_array_equal(owners[2].ravel(), np.arange(2 * 6 * 8))     # a gather: one thread per dx
