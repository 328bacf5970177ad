"""Explicit SIMD vectors for Numba kernels: what a JIT like oneDNN's writes, in a few intrinsics.

Numba compiles loops through LLVM, whose vectoriser handles one innermost loop at a time.
A convolution's fast kernel needs more than that: a *register block*, a dozen or more
vector accumulators that stay in registers while the reduction over input channels and
kernel taps runs, each input vector loaded once and used for every accumulator. LLVM
does not build that from scalar code (tried: 64 scalar accumulators ran at 10 GFLOP/s,
spilled, unvectorised), so these intrinsics emit the vector instructions themselves:

* ``Vector(dtype)``: an LLVM vector ``<lanes x float>`` as a Numba type, ``VECTOR_BYTES``
  wide (64 bytes with AVX-512: 16 float32 lanes; 32 with AVX/AVX2; 16 otherwise);
* ``load(a, k)``           a.flat[k : k + lanes] as a vector (unaligned; no bounds check);
* ``zeros(a, count)``      a tuple of ``count`` (a compile-time constant) zero vectors;
* ``fma_broadcast(acc, x, w, k)``   acc[b] + x · w.flat[k + b] for each b (w's scalar
  broadcast to every lane: one ``vfmadd…{1to16}`` per accumulator on AVX-512);
* ``fma(acc, a, b)``      acc + a · b, lane by lane;
* ``fma_rows(acc, a, k, stride, x)``   acc[b] + a.flat[k + b·stride : … + lanes] · x for each b;
* ``store_rows(a, k, stride, acc)``   a.flat[k + b·stride : … + lanes] = acc[b] for each b;
* ``store_rows_bias(a, k, stride, acc, bias, m, relu)``   the same with bias[m + b] added, then
  the ReLU if ``relu`` (a convolution's bias and activation fused into its stores);
* ``store_lane_sums(a, k, stride, acc)``   a.flat[k + b·stride] = Σ of acc[b]'s lanes (by halves);
* ``lane_sum(v)``          Σ of v's lanes in float64, in lane order.

Tuples of vectors are SSA values: LLVM keeps them in registers (the register block)
when they fit, which ``REGISTERS`` (the vector registers of the ISA: 32 with AVX-512,
16 with AVX2) decides. Multiplies and adds carry LLVM's "contract" flag only: LLVM
fuses each pair into one FMA where the CPU has one (one rounding instead of two), and
never reorders a sum. The vector width and register count are read from the CPU Numba
compiles for (with ``NUMBA_CPU_NAME`` set: the features NUMBA_CPU_FEATURES names, else the
baseline, 16 bytes).
No bounds checks: the callers lay their arrays out so that every access is inside.
"""
from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic, models, register_model


def _host_features() -> dict:
    """The CPU features Numba compiles for: the host's; for a named CPU (NUMBA_CPU_NAME), those
    NUMBA_CPU_FEATURES names ("+avx2,+fma,..."), none if it names none (a portable build)."""
    if config.CPU_NAME:
        named = (config.CPU_FEATURES or "").split(",")
        return {f.strip()[1:]: True for f in named if f.strip().startswith("+")}
    try:
        import llvmlite.binding as llvm
        return dict(llvm.get_host_cpu_features())
    except Exception:          # features unreadable: the baseline below
        return {}


_FEATURES = _host_features()
VECTOR_BYTES = 64 if _FEATURES.get("avx512f") else 32 if _FEATURES.get("avx") else 16
REGISTERS = 32 if _FEATURES.get("avx512f") or platform.machine().lower() in ("aarch64", "arm64") else 16


def lanes(itemsize: int) -> int:
    """Values of ``itemsize`` bytes in one vector."""
    return VECTOR_BYTES // itemsize


class Vector(types.Type):
    """An LLVM vector of ``lanes(dtype)`` float32 or float64 values."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = lanes(dtype.bitwidth // 8)
        super().__init__(name=f"vector({dtype}x{self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = ir.FloatType() if fe_type.dtype == types.float32 else ir.DoubleType()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_type(array_type):
    if array_type.dtype not in (types.float32, types.float64):
        raise TypeError(f"simd: float32 or float64 arrays only, got {array_type.dtype}")
    return Vector(array_type.dtype)


def _element_pointer(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [offset])


def _vector_pointer(context, builder, array_type, array, offset, vector_type):
    pointer = _element_pointer(context, builder, array_type, array, offset)
    return builder.bitcast(pointer, context.get_value_type(vector_type).as_pointer())


def _broadcast(builder, llvm_vector_type, scalar):
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(llvm_vector_type, ir.Undefined), scalar, ir.Constant(i32, 0))
    mask = ir.Constant(ir.VectorType(i32, llvm_vector_type.count), [0] * llvm_vector_type.count)
    return builder.shuffle_vector(one, ir.Constant(llvm_vector_type, ir.Undefined), mask)


def _fma(builder, acc, a, b):
    return builder.fadd(acc, builder.fmul(a, b, flags=("contract",)), flags=("contract",))


@intrinsic
def load(typingctx, array, offset):
    vector = _vector_type(array)

    def codegen(context, builder, signature, args):
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1], vector)
        return builder.load(pointer, align=array.dtype.bitwidth // 8)
    return vector(array, offset), codegen


@intrinsic
def zeros(typingctx, array, count):
    if not isinstance(count, types.IntegerLiteral):
        return None                # Numba retries with the literal value
    vector = _vector_type(array)
    block = types.UniTuple(vector, count.literal_value)

    def codegen(context, builder, signature, args):
        zero = ir.Constant(context.get_value_type(vector), [0.0] * vector.lanes)
        return context.make_tuple(builder, block, [zero] * count.literal_value)
    return block(array, count), codegen


@intrinsic
def fma_broadcast(typingctx, acc, x, weights, offset):
    def codegen(context, builder, signature, args):
        acc_value, x_value, weights_value, offset_value = args
        block = signature.args[0]
        llvm_vector = context.get_value_type(block.dtype)
        out = []
        for b in range(block.count):
            pointer = _element_pointer(context, builder, signature.args[2], weights_value,
                                       builder.add(offset_value, ir.Constant(offset_value.type, b)))
            weight = _broadcast(builder, llvm_vector, builder.load(pointer))
            out.append(_fma(builder, builder.extract_value(acc_value, b), x_value, weight))
        return context.make_tuple(builder, block, out)
    return acc(acc, x, weights, offset), codegen


@intrinsic
def fma(typingctx, acc, a, b):
    def codegen(context, builder, signature, args):
        return _fma(builder, *args)
    return acc(acc, a, b), codegen


@intrinsic
def store_rows(typingctx, array, offset, stride, acc):
    def codegen(context, builder, signature, args):
        array_value, offset_value, stride_value, acc_value = args
        block = signature.args[3]
        for b in range(block.count):
            at = builder.add(offset_value, builder.mul(stride_value, ir.Constant(stride_value.type, b)))
            pointer = _vector_pointer(context, builder, signature.args[0], array_value, at, block.dtype)
            builder.store(builder.extract_value(acc_value, b), pointer, align=block.dtype.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(array, offset, stride, acc), codegen


@intrinsic
def lane_sum(typingctx, vector):
    def codegen(context, builder, signature, args):
        total = ir.Constant(ir.DoubleType(), 0.0)
        for lane in range(vector.lanes):
            value = builder.extract_element(args[0], ir.Constant(ir.IntType(32), lane))
            if vector.dtype == types.float32:
                value = builder.fpext(value, ir.DoubleType())
            total = builder.fadd(total, value)
        return total
    return types.float64(vector), codegen


@intrinsic
def fma_rows(typingctx, acc, array, offset, stride, x):
    """acc[b] + array.flat[offset + b·stride : … + lanes] · x for each b (one vector load per accumulator)."""
    def codegen(context, builder, signature, args):
        acc_value, array_value, offset_value, stride_value, x_value = args
        block = signature.args[0]
        out = []
        for b in range(block.count):
            at = builder.add(offset_value, builder.mul(stride_value, ir.Constant(stride_value.type, b)))
            pointer = _vector_pointer(context, builder, signature.args[1], array_value, at, block.dtype)
            row = builder.load(pointer, align=block.dtype.dtype.bitwidth // 8)
            out.append(_fma(builder, builder.extract_value(acc_value, b), row, x_value))
        return context.make_tuple(builder, block, out)
    return acc(acc, array, offset, stride, x), codegen


def _tree_sum(builder, vector_value, lanes_count):
    """Σ of the lanes by halves (lanes 0..n/2−1 + n/2..n−1, and so on): a fixed order, log2(lanes) steps."""
    i32 = ir.IntType(32)
    while lanes_count > 1:
        half = lanes_count // 2
        low = builder.shuffle_vector(vector_value, vector_value, ir.Constant(ir.VectorType(i32, half), list(range(half))))
        high = builder.shuffle_vector(vector_value, vector_value,
                                      ir.Constant(ir.VectorType(i32, half), list(range(half, lanes_count))))
        vector_value, lanes_count = builder.fadd(low, high), half
    return builder.extract_element(vector_value, ir.Constant(i32, 0))


@intrinsic
def store_lane_sums(typingctx, array, offset, stride, acc):
    """array.flat[offset + b·stride] = Σ of acc[b]'s lanes (added by halves, in the vector's
    precision), for each b: a float64 array receives the sums converted to float64."""
    def codegen(context, builder, signature, args):
        array_value, offset_value, stride_value, acc_value = args
        block = signature.args[3]
        for b in range(block.count):
            total = _tree_sum(builder, builder.extract_value(acc_value, b), block.dtype.lanes)
            if array.dtype == types.float64 and block.dtype.dtype == types.float32:
                total = builder.fpext(total, ir.DoubleType())
            at = builder.add(offset_value, builder.mul(stride_value, ir.Constant(stride_value.type, b)))
            builder.store(total, _element_pointer(context, builder, signature.args[0], array_value, at))
        return context.get_dummy_value()
    return types.none(array, offset, stride, acc), codegen


@intrinsic
def store_rows_bias(typingctx, array, offset, stride, acc, bias, bias_offset, relu):
    """array.flat[offset + b·stride : … + lanes] = acc[b] + bias[bias_offset + b] for each b, then
    with ``relu`` max(·, 0) as tinyseg's ReLU computes it: NaN stays NaN, −0.0 becomes +0.0."""
    def codegen(context, builder, signature, args):
        array_value, offset_value, stride_value, acc_value, bias_value, bias_offset_value, relu_value = args
        block = signature.args[3]
        llvm_vector = context.get_value_type(block.dtype)
        zero = ir.Constant(llvm_vector, [0.0] * block.dtype.lanes)
        relu_lanes = _broadcast(builder, ir.VectorType(ir.IntType(1), block.dtype.lanes),
                                builder.trunc(relu_value, ir.IntType(1)) if relu_value.type != ir.IntType(1)
                                else relu_value)
        for b in range(block.count):
            pointer = _element_pointer(context, builder, signature.args[4], bias_value,
                                       builder.add(bias_offset_value, ir.Constant(bias_offset_value.type, b)))
            value = builder.fadd(builder.extract_value(acc_value, b), _broadcast(builder, llvm_vector, builder.load(pointer)))
            keep = builder.or_(builder.fcmp_unordered(">", value, zero), builder.not_(relu_lanes))
            value = builder.select(keep, value, zero)
            at = builder.add(offset_value, builder.mul(stride_value, ir.Constant(stride_value.type, b)))
            builder.store(value, _vector_pointer(context, builder, signature.args[0], array_value, at, block.dtype),
                          align=block.dtype.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(array, offset, stride, acc, bias, bias_offset, relu), codegen
