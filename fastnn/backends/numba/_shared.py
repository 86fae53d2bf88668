"""Inlines shared by the numba backend's compiled files (the counterpart of the cython backend's
``_shared.pxd``): the cycle counter, prefetch and atomic intrinsics, the in-place activations and their
derivatives, and one row's softmax. The fused training step, the fused forward and the
augmentation import them; nothing here is part of the kernel interface.
"""
from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_FTZ_DAZ = 0x8040                        # MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero


@intrinsic
def cycles(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``: rdtsc on x86), as int64 ticks."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                            "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _prefetch_address(typingctx, array, index):
    """Hint the CPU to bring &array[index] into cache (``llvm.prefetch``, read, high locality)."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, ir.IntType(32), ir.IntType(32), ir.IntType(32)]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(ir.IntType(32), 0),
                          ir.Constant(ir.IntType(32), 3), ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()
    return types.none(array, types.intp), codegen


def _int64_element(context, builder, signature, args):
    """Pointer to element args[1] of the int64 array args[0] (the atomics' operand)."""
    ary = context.make_array(signature.args[0])(context, builder, args[0])
    return builder.gep(ary.data, [args[1]])


def _int64_vector(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.int64 and array.ndim == 1


@intrinsic
def atomic_add(typingctx, array, index, value):
    """array[index] += value as one atomic read-modify-write (LLVM ``atomicrmw add``, sequentially
    consistent), returning the value before; array 1-D int64. The fused step's threads claim and
    count its parts with it."""
    if not _int64_vector(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _int64_element(context, builder, signature, args), args[2], "seq_cst")
    return types.int64(array, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index] read atomically with acquire order (what another thread wrote before its
    atomic_add is seen after this read sees that add); array 1-D int64. Never hoisted out of a loop."""
    if not _int64_vector(array):
        return None

    def codegen(context, builder, signature, args):
        return builder.load_atomic(_int64_element(context, builder, signature, args), "acquire", 8)
    return types.int64(array, types.intp), codegen


@intrinsic
def spin_pause(typingctx):
    """One spin-wait hint (x86 ``pause``: the core yields to its sibling and saves power; a no-op elsewhere)."""
    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


def _mxcsr(builder, name, slot):
    """Call ``llvm.x86.sse.stmxcsr`` or ``ldmxcsr`` on the 4-byte slot."""
    i8p = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p]), name)
    builder.call(fn, [builder.bitcast(slot, i8p)])


@intrinsic
def denormals_off(typingctx):
    """This thread's SSE/AVX arithmetic flushes subnormal results to zero and reads subnormal
    operands as zero (MXCSR's FTZ and DAZ bits, as XLA's CPU threads run) until
    ``fp_mode_restore``; returns the mode before (int64; 0 and a no-op off x86). Momentum's
    velocity of a pixel no sample has decays 0.9x a step into the subnormals, and Intel cores
    take a microcode assist for each subnormal operation (cython's ``team.h`` does the same)."""
    def codegen(context, builder, signature, args):
        if not _X86:
            return ir.Constant(ir.IntType(64), 0)
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        _mxcsr(builder, "llvm.x86.sse.stmxcsr", slot)
        mode = builder.load(slot)
        builder.store(builder.or_(mode, ir.Constant(ir.IntType(32), _FTZ_DAZ)), slot)
        _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return builder.zext(mode, ir.IntType(64))
    return types.int64(), codegen


@intrinsic
def fp_mode_restore(typingctx, mode):
    """Put back the floating-point mode ``denormals_off`` returned (a no-op off x86)."""
    if not isinstance(mode, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        if _X86:
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(builder.trunc(args[0], ir.IntType(32)), slot)
            _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()
    return types.none(mode), codegen


@njit(cache=True, inline="always")
def _prefetch_row(indptr, indices, pixels, row):
    """Prefetch CSR row ``row``'s indices and pixels, a 64-byte line at a time."""
    q0, q1 = indptr[row], indptr[row + 1]
    for q in range(q0, q1, 32):
        _prefetch_address(indices, q)
    for q in range(q0, q1, 64):
        _prefetch_address(pixels, q)


@njit(cache=True, inline="always")
def _row_ascending(indices, a, b, size):
    """Whether a CSR row's pixel indices[a:b] rise strictly and stay below ``size``: what the
    kernels' binary searches and row reads rely on (one branch-free pass). Unsigned positions:
    without Numba's negative-index fix-up LLVM vectorizes the loop (13 against 73 ns for a
    150-pixel row, measured)."""
    if b <= a:
        return True
    bad = np.uint8(indices[b - 1] >= size)
    one = np.uint64(1)
    for q in range(np.uint64(a) + one, np.uint64(b)):
        bad |= np.uint8(indices[q] <= indices[q - one])
    return bad == 0


@njit(cache=True)
def read_cycles():
    """``cycles()`` callable from Python, to calibrate ticks against seconds."""
    return cycles()


# ---------------------------------------------------------------- elementwise pieces
# In-place versions of the interface's activation kernels (kernels.py's ``_relu_kernel``
# etc.): here ``out`` is often the same slice as ``z`` (no dropout), and ``d`` is read and
# written. Called on one array twice, the interface kernels fail LLVM's runtime alias check
# and run scalar: the backward to layer 0 took 0.029 s per epoch against 0.012 s with these
# loops (profiles/numba.txt, two runs of `python -m fastnn.profile --backend numba`).
@njit(cache=True, fastmath={"contract"}, inline="always")
def _activate(z, out, act):
    """out = act(z) on 1-D slices (``out`` may be ``z``): relu (0), sigmoid (1, in float64,
    stable, as ``_sigmoid_kernel``), tanh (2)."""
    if act == 0:
        for j in range(z.size):
            out[j] = z[j] if z[j] > 0 else 0
    elif act == 1:
        for j in range(z.size):
            x = np.float64(z[j])
            e = np.exp(-abs(x))
            out[j] = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
    else:
        for j in range(z.size):
            out[j] = np.tanh(z[j])


@njit(cache=True, fastmath={"contract"}, inline="always")
def _activate_backward(d, out, act):
    """d *= act'(z) in place, from the activation's output ``out`` (1-D slices; out > 0 exactly
    where z > 0 for relu)."""
    if act == 0:
        for j in range(d.size):
            d[j] = d[j] if out[j] > 0 else 0
    elif act == 1:
        for j in range(d.size):
            d[j] = d[j] * out[j] * (1 - out[j])
    else:
        for j in range(d.size):
            d[j] = d[j] * (1 - out[j] * out[j])


@njit(cache=True, inline="always")
def softmax_row(z, probs):
    """probs (C,) = softmax(z) with the row maximum subtracted (the sum in float64); returns
    (sum of exp(z - max), max) for the log-sum-exp. Shared with the backend's ``softmax``."""
    mx = z[0]
    for j in range(1, z.size):
        if z[j] > mx:
            mx = z[j]
    s = 0.0
    for j in range(z.size):
        e = np.exp(z[j] - mx)
        probs[j] = e
        s += e
    inv = 1.0 / s
    for j in range(z.size):
        probs[j] *= inv
    return s, mx
