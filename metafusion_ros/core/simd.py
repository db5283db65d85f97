"""The decision rules' kernel (eq. 1, 16), with one pixel's class scores as SIMD vectors.

A softmax from an NHWC network keeps a pixel's C scores side by side, so the per-pixel work of
the decision rules (class sum, any negative or NaN value, largest value and its first index) is
a horizontal reduction over C values. Written as a scalar loop it is a chain of C dependent
compare-and-select steps per pixel, and LLVM vectorises neither that chain nor a fully unrolled
one. :func:`pixel_bayes` emits the reduction directly as 8-lane vector IR through a numba
intrinsic: the C values are loaded as ``ceil(C / 8)`` vectors (the last one overlapping the one
before instead of reading past the pixel; fewer than 8 classes are padded with class 0's value),
the first index of the maximum is ``cttz`` of the lanes' equality bitmask, and nothing branches.
:func:`pixel_ml` does the same for the products with the inverse priors, so the ML rule costs
one more stream of memory and no per-prior shortcut: its cost does not depend on the priors.
LLVM lowers the IR for the CPU numba compiles for (AVX2 here; SSE2 is tested too).
"""
from __future__ import annotations

from llvmlite import ir
import numba
from numba import types
from numba.extending import intrinsic
import numpy as np

__all__ = ['LANES', 'MAX_CLASSES', 'pixel_bayes', 'pixel_ml', 'rules_kernel']

LANES = 8
MAX_CLASSES = 64  # the first-maximum bitmask is one 64-bit word

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VEC = ir.VectorType(_F32, LANES)


def vector_starts(num_classes: int) -> list[int]:
    """Return the first class of each 8-lane vector covering classes ``0 .. C-1`` (C >= 8)."""
    starts = list(range(0, num_classes - LANES + 1, LANES))
    if num_classes % LANES:
        starts.append(num_classes - LANES)  # overlaps the vector before: no read past the pixel
    return starts


def _shuffle(builder: ir.IRBuilder, v: ir.Value, lanes: list[int]) -> ir.Value:
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, len(lanes)), lanes))


def _reduce(builder: ir.IRBuilder, v: ir.Value, pick) -> ir.Value:
    """Reduce an 8-lane vector to a scalar with ``pick(a, b)`` (halving: 8 -> 4 -> 2 -> 1)."""
    width = LANES
    while width > 1:
        width //= 2
        v = pick(_shuffle(builder, v, list(range(width))),
                 _shuffle(builder, v, list(range(width, 2 * width))))
    return builder.extract_element(v, ir.Constant(_I32, 0))


def _load_vectors(builder: ir.IRBuilder, data: ir.Value, offset: ir.Value, num_classes: int
                  ) -> tuple[list[ir.Value], list[int], list[bool]]:
    """Load a pixel's values as vectors; return them, their first classes and a sum lane mask.

    The mask keeps the lanes that count towards the class sum in the last vector (the lanes it
    shares with the vector before, or the padding of a pixel with fewer than 8 classes, do not).
    """
    def at(index: int) -> ir.Value:
        return builder.gep(data, [builder.add(offset, ir.Constant(_I64, index))])

    if num_classes < LANES:
        first = builder.load(at(0))
        vector = ir.Constant(_VEC, ir.Undefined)
        for lane in range(LANES):
            value = builder.load(at(lane)) if 0 < lane < num_classes else first
            vector = builder.insert_element(vector, value, ir.Constant(_I32, lane))
        return [vector], [0], [lane < num_classes for lane in range(LANES)]
    starts = vector_starts(num_classes)
    vectors = [builder.load(builder.bitcast(at(s), _VEC.as_pointer()), align=4) for s in starts]
    covered = LANES * (len(starts) - 1)
    return vectors, starts, [starts[-1] + lane >= covered for lane in range(LANES)]


def _first_max(builder: ir.IRBuilder, vectors: list[ir.Value], starts: list[int]
               ) -> tuple[ir.Value, ir.Value]:
    """Return the largest lane value and the smallest class index holding it (0 if none: NaN).

    The index is ``cttz`` of the bitmask of the lanes equal to the maximum, each vector's
    lanes shifted to their classes (an overlapping vector sets bits already set).
    """
    def pick(a: ir.Value, b: ir.Value) -> ir.Value:
        return builder.select(builder.fcmp_ordered('>', b, a), b, a)

    high = vectors[-1]
    for v in vectors[:-1]:
        high = pick(high, v)
    best = _reduce(builder, high, pick)
    splat = _shuffle(builder, builder.insert_element(
        ir.Constant(_VEC, ir.Undefined), best, ir.Constant(_I32, 0)), [0] * LANES)
    bits = ir.Constant(_I64, 0)
    for v, start in zip(vectors, starts):
        equal = builder.bitcast(builder.fcmp_ordered('==', v, splat), ir.IntType(LANES))
        bits = builder.or_(bits, builder.shl(builder.zext(equal, _I64), ir.Constant(_I64, start)))
    cttz = builder.module.declare_intrinsic(
        'llvm.cttz', [_I64], ir.FunctionType(_I64, [_I64, ir.IntType(1)]))
    first = builder.call(cttz, [bits, ir.Constant(ir.IntType(1), 0)])
    none = builder.icmp_unsigned('==', bits, ir.Constant(_I64, 0))
    return best, builder.select(none, ir.Constant(_I64, 0), first)


def _lanes_count(probs, offset, lanes) -> int:
    """Return C for a valid (float32 C-contiguous 1-D array, int64, tuple) typing, else 0."""
    num_classes = len(lanes) if isinstance(lanes, types.BaseTuple) else 0
    valid = (isinstance(probs, types.Array) and probs.dtype == types.float32
             and probs.ndim == 1 and probs.layout == 'C' and offset == types.int64)
    return num_classes if valid and 1 <= num_classes <= MAX_CLASSES else 0


@intrinsic
def pixel_bayes(typingctx, probs, offset, lanes):
    """Reduce the C = ``len(lanes)`` values at ``probs[offset:offset + C]`` (eq. 1).

    Returns ``(class sum, largest value, index of its first occurrence, any value < 0 or NaN)``.
    The sum is not in index order (a reassociated float32 sum). With a NaN the index is still in
    ``0 .. C-1`` and the sum is NaN. ``probs`` is a contiguous 1-D float32 array, ``offset`` an
    int64; ``lanes`` is any tuple of length C, 1 <= C <= 64, which fixes C when the caller is
    compiled. No bounds are checked: the caller keeps ``offset + C <= probs.size``.
    """
    num_classes = _lanes_count(probs, offset, lanes)
    if not num_classes:
        return None
    signature = types.Tuple((types.float32, types.float32, types.int64, types.boolean))(
        probs, offset, lanes)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        vectors, starts, sum_lanes = _load_vectors(builder, data, args[1], num_classes)
        zero = ir.Constant(_VEC, [0.0] * LANES)
        mask = ir.Constant(ir.VectorType(ir.IntType(1), LANES), sum_lanes)
        total = builder.select(mask, vectors[-1], zero)
        negative = builder.fcmp_unordered('<', vectors[-1], zero)  # as numpy's ~(p >= 0)
        for v in vectors[:-1]:
            total = builder.fadd(total, v)
            negative = builder.or_(negative, builder.fcmp_unordered('<', v, zero))
        best, arg = _first_max(builder, vectors, starts)
        negative = builder.bitcast(negative, ir.IntType(LANES))
        any_negative = builder.icmp_unsigned('!=', negative, ir.Constant(ir.IntType(LANES), 0))
        return context.make_tuple(builder, sig.return_type, (
            _reduce(builder, total, builder.fadd), best, arg, any_negative))

    return signature, codegen


@intrinsic
def pixel_ml(typingctx, probs, inverse, offset, lanes):
    """Return the largest ``p(y) * inverse(y)`` of one pixel and its first class (eq. 3, 16).

    ``inverse`` holds ``1 / (p_α + 1e-5)`` in the layout of ``probs``; the products are the
    float32 products of the numpy rule, so the argmax is the same. Types as :func:`pixel_bayes`.
    """
    num_classes = _lanes_count(probs, offset, lanes)
    if not num_classes or inverse != probs:
        return None
    signature = types.Tuple((types.float32, types.int64))(probs, inverse, offset, lanes)

    def codegen(context, builder, sig, args):
        data = [context.make_array(t)(context, builder, a).data
                for t, a in zip(sig.args[:2], args[:2])]
        values, starts, _ = _load_vectors(builder, data[0], args[2], num_classes)
        inverses, _, _ = _load_vectors(builder, data[1], args[2], num_classes)
        products = [builder.fmul(v, i) for v, i in zip(values, inverses)]
        return context.make_tuple(builder, sig.return_type, _first_max(builder, products, starts))

    return signature, codegen


@numba.njit(cache=True, nogil=True)
def _first_max_without(row, weights, merged):
    """Return the first class of the largest ``row * weights`` among classes not merged."""
    best = np.float32(-1)
    arg = 0
    for y in range(row.size):
        score = row[y] * weights[y]
        if not merged[y] and score > best:
            best, arg = score, y
    return best, arg


@numba.njit(cache=True, nogil=True)
def rules_kernel(probs, inverse, merged, pred_bayes, pred_ml, lanes):
    """Fill the Bayes and ML masks (eq. 1, 16) of a flat softmax; return (bad pixels, max error).

    ``probs`` (H*W*C,) float32 with C = ``len(lanes)``; ``inverse`` the same layout holding
    ``1 / (p_α + 1e-5)`` per pixel and class, or None for α = 0 (ML is then Bayes); ``merged``
    (C,) bool, classes no rule may choose (a merged winner is rare: its pixel is rescanned).
    Kept in this module with the intrinsics so that numba's cache, which watches only the
    kernel's own file, is rebuilt whenever the vector IR changes.
    """
    c = len(lanes)
    ones = np.ones(c, dtype=np.float32)
    bad = 0
    max_err = np.float32(0)
    for k in range(pred_bayes.size):
        total, best, arg, negative = pixel_bayes(probs, k * c, lanes)
        if merged[arg]:
            best, arg = _first_max_without(probs[k * c:k * c + c], ones, merged)
        bad += negative
        err = abs(total - np.float32(1))  # NaN poisons the sum and is reported as such
        if not err <= max_err:
            max_err = err if err == err else np.float32(np.inf)
        pred_bayes[k] = arg
        if inverse is None:
            pred_ml[k] = arg
            continue
        _, arg_ml = pixel_ml(probs, inverse, k * c, lanes)
        if merged[arg_ml]:
            _, arg_ml = _first_max_without(probs[k * c:k * c + c], inverse[k * c:k * c + c],
                                           merged)
        pred_ml[k] = arg_ml
    return bad, max_err
