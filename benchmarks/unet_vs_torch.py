"""The reference U-Net, tinyseg against PyTorch on this CPU (same as `tinyseg bench`).

    python benchmarks/unet_vs_torch.py [--configs B16-b4-128 B32-b2-256 B64-b1-256] [--repeats 3] [--out bench_out]

Builds the same network in both, checks they compute the same loss and gradients, then
times training steps and single-image inference in separate, alternating processes and
writes bench.md (table), bench.json and bench.png (chart) to --out. See tinyseg/bench.py.
"""
import argparse

from tinyseg import bench


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(bench.CONFIGS), choices=list(bench.CONFIGS))
    p.add_argument("--repeats", type=int, default=3, help="worker processes per framework, config and mode")
    p.add_argument("--steps", type=int, default=5, help="timed steps per worker (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_out")
    p.add_argument("--kernel", default=None, help="tinyseg's conv2d kernel: im2col, numba-im2col, winograd, auto")
    p.add_argument("--block-mb", type=float, default=None, help="conv work-block size in MB (default 32)")
    args = p.parse_args()
    rows = bench.run(configs=args.configs, repeats=args.repeats, steps=args.steps, threads=args.threads,
                     out_dir=args.out, kernel=args.kernel, block_mb=args.block_mb)
    print()
    print(bench.markdown_table(rows))


if __name__ == "__main__":
    main()
