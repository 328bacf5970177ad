"""The pictures of docs/gpu.md: which thread of which block computes each output, for the real kernels.

    python docs/img/gen_gpu_pictures.py          (from the repository root; a minute, no GPU needed)

Each picture runs tinyseg's own launch code and kernels/*.cu under
``tinyseg.backend.cuda_emulation()`` on a tiny input (``record_launches``), then replays
the launch with the element type traced (``tinyseg.cuda.trace.thread_owners``): every
assignment to an output element notes the thread that made it. Nothing is drawn from a
formula; if a kernel's mapping changes, the pictures change when this is run again.
Writes docs/img/gpu_*.png and prints each launch record.
"""
from pathlib import Path

import numpy as np

import tinyseg as ts
import tinyseg.functional as F
from tinyseg import backend
from tinyseg.cuda.trace import LaunchCall, record_launches, thread_owners
from tinyseg.viz import plot_thread_map

HERE = Path(__file__).resolve().parent


def conv_launch(kernel, x_shape, w_shape, padding=1):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    with backend.use_kernel("conv2d", kernel):
        calls = record_launches(lambda: F.conv2d(ts.Tensor(x), ts.Tensor(w), padding=padding))
    for call in calls:
        print(f"{kernel}: {call.kernel} <<<grid {call.grid}, block {call.block}, {call.shared_mem} B shared>>>")
    return calls[0]


def side_by_side(panels, gap=1):
    """Panels (H, W_k) joined left to right with ``gap`` empty (-1) columns; the column where each starts."""
    height = max(p.shape[0] for p in panels)
    parts, starts, column = [], [], 0
    for k, p in enumerate(panels):
        if k:
            parts.append(np.full((height, gap), -1, dtype=p.dtype))
            column += gap
        starts.append(column)
        parts.append(p)
        column += p.shape[1]
    return np.concatenate(parts, axis=1), starts


def v1_forward():
    """One thread per output: the flat index of y (j fastest) is the global thread index."""
    call = conv_launch("cuda_v1", (1, 1, 12, 12), (2, 1, 3, 3))
    owner = thread_owners(call)[2][0]                       # y (1, 2, 12, 12) -> the two channels
    joined, starts = side_by_side([owner[0], owner[1]])
    block = np.where(joined >= 0, joined // call.threads_per_block, -1)
    plot_thread_map(joined, HERE / "gpu_v1_forward.png", colour_by=block, cell=0.36,
                    title=f"conv v1 forward, y (1, 2, 12, 12): output channel 0 | channel 1 — "
                          f"one thread per output, blocks of {call.threads_per_block} "
                          f"(colour: block; number: global thread)",
                    xlabel="output column j (channel 0, then channel 1)")


def v2_forward():
    """A block per 16×16 output tile and 8 output channels; a thread per pixel, 8 channels."""
    call = conv_launch("cuda_v2", (1, 1, 20, 20), (9, 1, 3, 3))
    owner = thread_owners(call)[2][0]                       # y (1, 9, 20, 20)
    panels = [owner[0], owner[1], owner[8]]
    joined, starts = side_by_side(panels)
    threads = call.threads_per_block
    block = np.where(joined >= 0, joined // threads, -1)
    labels = np.where(joined >= 0, joined % threads, -1).astype(object)
    labels[joined < 0] = None
    plot_thread_map(joined, HERE / "gpu_v2_forward.png", colour_by=block, labels=labels, cell=0.27,
                    fontsize=3.6,
                    title=f"conv v2 forward, y (1, 9, 20, 20): channels 0 | 1 | 8 — block {call.block[:2]} "
                          f"per output tile and group of 8 channels, grid {call.grid} "
                          f"(colour: block; number: thread in its block)",
                    xlabel="output column j (channel 0, channel 1, channel 8)")


def v3_forward():
    """Implicit GEMM: y seen as the matrix (O × N·Ho·Wo); a 64×64 tile per block, 4×4 outputs per thread."""
    call = conv_launch("cuda_v3", (1, 2, 8, 8), (32, 2, 3, 3))
    owner = thread_owners(call)[2][0].reshape(32, 64)      # rows o, columns (i, j): one 64-column tile
    thread = owner % call.threads_per_block
    tx, ty = thread % call.block[0], thread // call.block[0]
    shown = [(0, 0), (1, 0), (0, 1), (5, 3)]                 # (tx, ty) of the threads drawn
    keep = np.zeros(owner.shape, dtype=bool)
    for a, b in shown:
        keep |= (tx == a) & (ty == b)
    labels = np.array([[f"{a},{b}" for a, b in zip(r1, r2)] for r1, r2 in zip(tx, ty)], dtype=object)
    plot_thread_map(np.where(keep, owner, -1), HERE / "gpu_v3_forward.png", colour_by=thread, labels=labels,
                    cell=0.24, fontsize=4.5,
                    title=f"conv v3 forward as a GEMM: y (1, 32, 8, 8) = W (32 × 18) · cols (18 × 64), one block "
                          f"{call.block[:2]} for the 64×64 tile (grid {call.grid}); the outputs of 4 of its 256 "
                          f"threads (tx,ty):\neach holds 2×4 here (4×4 when O ≥ 64) in registers: rows ty + 16r, "
                          f"columns tx + 16c",
                    xlabel="GEMM column = output pixel i·8 + j", ylabel="GEMM row = output channel o")


def grid_stride():
    """A grid-stride loop: 2 blocks of 8 threads cover 40 elements, each thread every 16th one."""
    x = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    call = LaunchCall("activation.cu", "relu_forward", np.dtype(np.float32), (2, 1, 1), (8, 1, 1),
                      (x, np.empty_like(x), np.int64(x.size)), 0)
    print(f"grid-stride: {call.kernel} <<<grid {call.grid}, block {call.block}>>> on {x.size} elements")
    owner = thread_owners(call)[1].reshape(5, 8)
    plot_thread_map(owner, HERE / "gpu_grid_stride.png", colour_by=owner, cell=0.55,
                    title="ReLU's grid-stride loop: grid 2 × block 8 = 16 threads for 40 elements "
                          "(number: global thread; k = t, t + 16, t + 32)",
                    xlabel="element k mod 8", ylabel="element k // 8")


if __name__ == "__main__":
    v1_forward()
    v2_forward()
    v3_forward()
    grid_stride()
    print("wrote", ", ".join(sorted(p.name for p in HERE.glob("gpu_*.png"))))
