"""Every kernel of every op on the U-Net's shapes, and a training step, on the GPU (or the CPU).

    python benchmarks/gpu_bench.py [--device cuda|cpu] [--quick] [--cpu-kernels all] [--out bench_gpu_out]

The same as `tinyseg bench --device ...`: the reference U-Net (base 64, depth 4, batch 8,
256², float32); every kernel registered for conv2d (forward, input gradient, weight
gradient per layer shape), max/avg-pool, nearest/bilinear upsampling, ReLU,
BCE-with-logits and Adam, and PyTorch (cuDNN with TF32 off and on; CPU) when installed;
each checked against the CPU reference kernel before it is timed; then a full training
step per kernel choice. Writes kernels.md, kernels.json and roofline.png to --out.
Without a GPU, --device cuda says so and runs the CPU part. See tinyseg/bench_gpu.py
and docs/gpu.md; benchmarks/gpu_check.sh runs it on a lent GPU.
"""
import argparse

from tinyseg import bench_gpu


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny shapes, few repeats")
    p.add_argument("--cpu-kernels", choices=["all", "default"], default=None,
                   help="on a GPU run, time every CPU kernel too (default: the reference and default ones)")
    p.add_argument("--ops", nargs="+", default=None, choices=sorted(bench_gpu.registries()),
                   help="only these ops (default: all)")
    p.add_argument("--no-step", dest="step", action="store_false", help="skip the training steps")
    p.add_argument("--no-torch", dest="torch", action="store_false", help="skip PyTorch")
    p.add_argument("--config", nargs=3, type=int, metavar=("BASE", "BATCH", "SIZE"), default=None,
                   help="another size of the U-Net (default: 64 8 256; --quick: 2 1 16)")
    p.add_argument("--out", default="bench_gpu_out")
    args = p.parse_args()
    config = bench_gpu.Config(*args.config) if args.config else None
    bench_gpu.run(device=args.device, quick=args.quick, out_dir=args.out, cpu_kernels=args.cpu_kernels,
                  ops=args.ops, with_step=args.step, with_torch=args.torch, config=config)


if __name__ == "__main__":
    main()
