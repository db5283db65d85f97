"""The decision rules' kernel (eq. 1, 16), with one pixel's class scores as SIMD vectors.

A softmax from an NHWC network keeps a pixel's C scores side by side, so the per-pixel work of
the decision rules (class sum, any negative or NaN value, largest value and its first index) is
a horizontal reduction over C values. Written as a scalar loop it is a chain of C dependent
compare-and-select steps per pixel, and LLVM vectorises neither that chain nor a fully unrolled
one. :func:`pixel_bayes` emits the reduction directly as 8-lane vector IR through a numba
intrinsic: the C values are loaded as ``ceil(C / 8)`` vectors (the last one overlapping the one
before instead of reading past the pixel; fewer than 8 classes are padded with class 0's value),
merged classes score -1 as in the reference, the first index of the maximum is ``cttz`` of the
lanes' equality bitmask, and nothing branches. :func:`pixel_ml` does the same for the products
with the inverse priors, read at the priors' level (K categories, spread over the classes by
constant shuffles): no per-prior shortcut, so the cost does not depend on the priors. The
:class:`Layout` (C, K, class -> channel, merged) is a compile-time constant of the kernel.
LLVM lowers the IR for the CPU numba compiles for (AVX2 here; the tests pass with SSE2 too).
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
from typing import Collection, Iterable

from llvmlite import ir
import numba
from numba import types
from numba.extending import intrinsic
import numpy as np

from metafusion_ros.core.jit import CACHE

__all__ = ['LANES', 'MAX_CLASSES', 'Layout', 'pixel_bayes', 'pixel_ml', 'rules_kernel']

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


@dataclass(frozen=True)
class Layout:
    """What the kernel compiles for: C classes, K prior channels, class -> channel, merged.

    Spelt as a string (``"8:1,1,2,-,..."``: K, then each class's channel or ``-`` for a merged
    class) that the kernel closes over; numba types it as a string literal, so every value is a
    constant in the IR.
    """

    channels: int
    channel_of: tuple[int | None, ...]

    @classmethod
    def of(cls, channels: int, channel_map: Iterable[int], merged: Collection[int]) -> 'Layout':
        """Return the layout of K = ``channels``, a class -> channel map and merged classes."""
        return cls(channels, tuple(None if y in merged else int(channel)
                                   for y, channel in enumerate(channel_map)))

    @classmethod
    def parse(cls, text: str) -> 'Layout':
        """Return the layout a string from :meth:`spell` spells."""
        k, classes = text.split(':')
        return cls(int(k), tuple(None if v == '-' else int(v) for v in classes.split(',')))

    def spell(self) -> str:
        """Return the string form (see the class docstring)."""
        classes = ('-' if v is None else str(v) for v in self.channel_of)
        return f'{self.channels}:' + ','.join(classes)

    @property
    def num_classes(self) -> int:
        """Return C."""
        return len(self.channel_of)

    @property
    def per_class(self) -> bool:
        """Return whether the channels are the classes (class-level priors)."""
        return self.channels == self.num_classes and all(
            v in (None, y) for y, v in enumerate(self.channel_of))

    def lanes(self, start: int) -> list[int]:
        """Return the classes in the 8 lanes of the vector from class ``start`` (0 pads)."""
        return [start + lane if start + lane < self.num_classes else 0 for lane in range(LANES)]


def _layout(text) -> Layout | None:
    """Return the :class:`Layout` of a string literal type valid for the vector code, or None."""
    if not isinstance(text, types.StringLiteral):
        return None
    layout = Layout.parse(text.literal_value)
    return layout if 1 <= layout.num_classes <= MAX_CLASSES else None


def _valid_array(array) -> bool:
    return (isinstance(array, types.Array) and array.dtype == types.float32 and array.ndim == 1
            and array.layout == 'C')


def _scores(builder: ir.IRBuilder, vectors: list[ir.Value], starts: list[int],
            layout: Layout) -> list[ir.Value]:
    """Return the vectors with merged classes' lanes set to -1, so that no rule picks them."""
    out = []
    for v, start in zip(vectors, starts):
        merged = [layout.channel_of[y] is None for y in layout.lanes(start)]
        if any(merged):
            v = builder.select(ir.Constant(ir.VectorType(ir.IntType(1), LANES), merged),
                               ir.Constant(_VEC, [-1.0] * LANES), v)
        out.append(v)
    return out


def _first_max(builder: ir.IRBuilder, vectors: list[ir.Value], starts: list[int]) -> ir.Value:
    """Return the smallest class index holding the largest lane value (0 if none: NaN).

    The index is ``cttz`` of the bitmask of the lanes equal to the maximum, each vector's
    lanes shifted to their classes (an overlapping vector sets bits already set).
    """
    def pick(a: ir.Value, b: ir.Value) -> ir.Value:
        return builder.select(builder.fcmp_ordered('>', b, a), b, a)

    high = vectors[-1]
    for v in vectors[:-1]:
        high = pick(high, v)
    for width in (4, 2, 1):  # every lane ends up holding the maximum: no broadcast needed
        high = pick(high, _shuffle(builder, high, [lane ^ width for lane in range(LANES)]))
    splat = high
    bits = ir.Constant(_I64, 0)
    for v, start in zip(vectors, starts):
        equal = builder.bitcast(builder.fcmp_ordered('==', v, splat), ir.IntType(LANES))
        bits = builder.or_(bits, builder.shl(builder.zext(equal, _I64), ir.Constant(_I64, start)))
    cttz = builder.module.declare_intrinsic(
        'llvm.cttz', [_I64], ir.FunctionType(_I64, [_I64, ir.IntType(1)]))
    first = builder.call(cttz, [bits, ir.Constant(ir.IntType(1), 0)])
    none = builder.icmp_unsigned('==', bits, ir.Constant(_I64, 0))
    return builder.select(none, ir.Constant(_I64, 0), first)


def _pixel_values(context, builder, sig, args, layout: Layout):
    """Load pixel ``args[1]`` of the softmax ``args[0]``: (vectors, starts, sum lane mask)."""
    data = context.make_array(sig.args[0])(context, builder, args[0]).data
    offset = builder.mul(args[1], ir.Constant(_I64, layout.num_classes))
    return _load_vectors(builder, data, offset, layout.num_classes)


@intrinsic
def pixel_bayes(typingctx, probs, pixel, layout):
    """Reduce one pixel's C values (eq. 1): ``(class sum, Bayes class, any value < 0 or NaN)``.

    The Bayes class is the first maximum among classes that are not merged. The sum is not in
    index order (a reassociated float32 sum). With a NaN the class is still in ``0 .. C-1`` and
    the sum is NaN. ``probs`` is a contiguous 1-D float32 array, ``pixel`` an int64 and
    ``layout`` a :class:`Layout` string literal. No bounds are checked: the caller keeps
    ``(pixel + 1) * C <= probs.size``.
    """
    spec = _layout(layout)
    if spec is None or not _valid_array(probs) or pixel != types.int64:
        return None
    signature = types.Tuple((types.float32, types.int64, types.boolean))(probs, pixel, layout)

    def codegen(context, builder, sig, args):
        vectors, starts, sum_lanes = _pixel_values(context, builder, sig, args, spec)
        zero = ir.Constant(_VEC, [0.0] * LANES)
        mask = ir.Constant(ir.VectorType(ir.IntType(1), LANES), sum_lanes)
        total = builder.select(mask, vectors[-1], zero)
        negative = builder.fcmp_unordered('<', vectors[-1], zero)  # as numpy's ~(p >= 0)
        for v in vectors[:-1]:
            total = builder.fadd(total, v)
            negative = builder.or_(negative, builder.fcmp_unordered('<', v, zero))
        arg = _first_max(builder, _scores(builder, vectors, starts, spec), starts)
        negative = builder.bitcast(negative, ir.IntType(LANES))
        any_negative = builder.icmp_unsigned('!=', negative, ir.Constant(ir.IntType(LANES), 0))
        return context.make_tuple(builder, sig.return_type, (
            _reduce(builder, total, builder.fadd), arg, any_negative))

    return signature, codegen


def _inverse_vectors(builder: ir.IRBuilder, data: ir.Value, pixel: ir.Value, starts: list[int],
                     layout: Layout) -> list[ir.Value]:
    """Load pixel ``pixel``'s K inverse priors and lay them out as its class vectors.

    Up to 16 channels are loaded as two 8-lane vectors (the second overlapping the first; fewer
    than 8 padded) and spread over the classes by constant shuffles; class-level priors
    (channel = class) are loaded like the softmax.
    """
    k = layout.channels
    offset = builder.mul(pixel, ir.Constant(_I64, k))
    loaded = _load_vectors(builder, data, offset, k)[0]
    if layout.per_class:
        return loaded
    first, second = loaded[0], loaded[-1]
    base = k - LANES if k >= LANES else 0  # the second vector's first channel

    def source(channel: int | None) -> int:
        channel = channel or 0  # a merged class's lane is replaced by -1 anyway
        return channel if channel < LANES else LANES + channel - base

    return [builder.shuffle_vector(first, second, ir.Constant(
        ir.VectorType(_I32, LANES), [source(layout.channel_of[y]) for y in layout.lanes(start)]))
        for start in starts]


@intrinsic
def pixel_ml(typingctx, probs, inverse, pixel, layout):
    """Return the first class of the largest ``p(y) * inverse(channel(y))`` (eq. 3, 16).

    ``inverse`` holds ``1 / (p_α + 1e-5)`` per pixel and prior channel (K per pixel, as the
    ``layout`` says); the products are the float32 products of the numpy rule, so the argmax is
    the same. Merged classes are never chosen. Types as :func:`pixel_bayes`.
    """
    spec = _layout(layout)
    if (spec is None or not (_valid_array(probs) and _valid_array(inverse))
            or pixel != types.int64 or spec.channels > 2 * LANES and not spec.per_class):
        return None
    signature = types.int64(probs, inverse, pixel, layout)

    def codegen(context, builder, sig, args):
        values, starts, _ = _pixel_values(context, builder, sig, args[:1] + args[2:], spec)
        inverse_data = context.make_array(sig.args[1])(context, builder, args[1]).data
        inverses = _inverse_vectors(builder, inverse_data, args[2], starts, spec)
        products = [builder.fmul(v, i) for v, i in zip(values, inverses)]
        return _first_max(builder, _scores(builder, products, starts, spec), starts)

    return signature, codegen


@functools.lru_cache(maxsize=None)
def rules_kernel(layout: str):
    """Return the kernel of the decision rules compiled for a :class:`Layout` string.

    ``kernel(probs, inverse, pred_bayes, pred_ml) -> (bad pixels, max |class sum - 1|)`` fills
    the Bayes and ML masks (eq. 1, 16) of a flat softmax: ``probs`` (H*W*C,) float32,
    ``inverse`` (H*W*K,) float32 ``1 / (p_α + 1e-5)`` per pixel and prior channel, or None for
    α = 0 (ML is then Bayes). The layout is a constant of the kernel, so each layout compiles
    once (numba caches it on disk per layout). Kept in this module with the intrinsics so that
    numba's cache, which watches only the kernel's own file, is rebuilt whenever the IR changes.
    """
    @numba.njit(cache=CACHE, nogil=True)
    def kernel(probs, inverse, pred_bayes, pred_ml):
        bad = 0
        nan = False
        max_err = np.float32(0)
        for k in range(pred_bayes.size):  # one basic block: no branch the CPU must predict
            total, arg, negative = pixel_bayes(probs, k, layout)
            bad += negative
            err = abs(total - np.float32(1))
            nan |= err != err  # NaN poisons the sum and is reported as such
            max_err = max(max_err, err)
            pred_bayes[k] = arg
            if inverse is None:  # resolved when compiling
                pred_ml[k] = arg
            else:
                pred_ml[k] = pixel_ml(probs, inverse, k, layout)
        return bad, np.float32(np.inf) if nan else max_err

    return kernel
