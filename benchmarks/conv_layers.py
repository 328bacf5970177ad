"""Per-layer conv2d timings of the reference U-Nets: every tinyseg kernel against PyTorch.

    python benchmarks/conv_layers.py [--configs B16-b4-128 ...] [--kernels im2col auto ...] [--out bench_out]

For each distinct conv shape of a training step (forward, input gradient, weight
gradient), one process per framework; writes layers.md and layers.json to --out. Same as
`tinyseg bench --layers`. See tinyseg/bench.py.
"""
import argparse

from tinyseg import bench
from tinyseg.functional import conv


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(bench.CONFIGS), choices=list(bench.CONFIGS))
    p.add_argument("--kernels", nargs="+", default=None, choices=sorted(conv.CONV2D_KERNELS),
                   help="default: every CPU kernel")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_out")
    args = p.parse_args()
    rows = bench.run_layers(configs=args.configs, repeats=args.repeats, threads=args.threads, out_dir=args.out,
                            kernels=args.kernels)
    print()
    print(bench.layers_markdown(rows, args.kernels))


if __name__ == "__main__":
    main()
