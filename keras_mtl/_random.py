"""Counter-based random numbers that are the same on every device and compiler.

`tf.random.stateless_uniform` draws different numbers under XLA than without
it (and may differ across device types), which would make the alternating
task sequence depend on `jit_compile`. These draws hash `(seed, step, k)`
with integer ops only (murmur3's 32-bit finalizer), computed in int64 and
masked to 32 bits, so TensorFlow's kernels and XLA agree bit for bit.
"""

import tensorflow as tf

_MASK = 0xFFFFFFFF


def _mix(h):
    """murmur3 fmix32 on int64 tensors holding 32-bit unsigned values."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
    h = _mulmod32(h, 0x85EBCA6B)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 13))
    h = _mulmod32(h, 0xC2B2AE35)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


def _mulmod32(a, b):
    """`(a * b) mod 2**32` for `a < 2**32`, with every product below 2**49
    (a plain int64 product could overflow, which is undefined)."""
    low = a * (b & 0xFFFF)
    high = tf.bitwise.left_shift(tf.bitwise.bitwise_and(a * (b >> 16), 0xFFFF), 16)
    return tf.bitwise.bitwise_and(low + high, _MASK)


def _mix_int(h):
    """`_mix` on a Python int (for the seed, hashed once at trace time)."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def uniform(seed, step, count=None):
    """Uniform floats in [0, 1), a pure function of `(seed, step, index)`.

    Args:
        seed: Python int in [0, 2**31).
        step: Integer tensor: one step (scalar), or a vector of steps to
            draw for all at once (the same numbers as one by one).
        count: `None` for one draw per step, or an int for `count`
            independent draws per step.

    Returns:
        float32 tensor of shape `step.shape`, or `step.shape + [count]`.
    """
    step = tf.bitwise.bitwise_and(tf.cast(step, tf.int64), _MASK)
    h = _mix(
        tf.bitwise.bitwise_and(_mix_int(seed ^ 0x9E3779B9) + _mulmod32(step, 0x9E3779B1), _MASK)
    )
    if count is not None:
        # Several draws per step: hash in the draw's index too.
        index = tf.range(1, count + 1, dtype=tf.int64)
        h = _mix(tf.bitwise.bitwise_and(h[..., None] + _mulmod32(index, 0x85EBCA77), _MASK))
    # The top 24 bits give floats exactly representable in float32, < 1.
    return tf.cast(tf.bitwise.right_shift(h, 8), tf.float32) * (1.0 / (1 << 24))


def normal(seed, step, count):
    """Standard normal floats (Box-Muller on `uniform`), shape `[count]`."""
    u = uniform(seed, step, 2 * count)
    u1 = 1.0 - u[:count]  # in (0, 1], so the log is finite
    u2 = u[count:]
    return tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * 3.141592653589793 * u2)
