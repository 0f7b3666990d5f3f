"""Small solvers shared by the gradient-combination methods of `weighting`.

All work on the T x T Gram matrix of the task gradients, in float64, with
fixed or bounded iteration counts so that they compile under XLA.
"""

import tensorflow as tf


def normalized_gram(gram):
    """`gram` in float64, divided by its trace (zero if the trace is zero).

    Every solver below returns the same coefficients for `G` and `s * G`;
    normalizing keeps its tolerances meaningful whatever the gradients' scale.
    """
    gram = tf.cast(gram, tf.float64)
    return tf.math.divide_no_nan(gram, tf.linalg.trace(gram))


def pairwise_frank_wolfe(num_tasks, gradient, line_search, iterations):
    """Minimizes a convex function of `w` over the simplex, from `w = 1/T`.

    Pairwise Frank-Wolfe (Lacoste-Julien & Jaggi, 2015): each iteration moves
    weight from the support vertex with the largest partial derivative to
    the vertex with the smallest, with an exact line search. Unlike plain
    Frank-Wolfe it converges linearly, so a few dozen iterations reach
    float64 precision on well-posed problems. Stops early once the two
    derivatives agree to 1e-12.

    Args:
        num_tasks: int, the dimension `T`.
        gradient: `w -> df/dw`, float64 `[T]`.
        line_search: `(w, direction, max_step) -> step` minimizing
            `f(w + step * direction)` over `[0, max_step]`.
        iterations: int, the most iterations.

    Returns:
        float64 `[T]` on the simplex.
    """

    def step(i, w, gap):
        g = gradient(w)
        to = tf.argmin(g)
        away = tf.argmax(tf.where(w > 0.0, g, tf.constant(-float("inf"), tf.float64)))
        direction = tf.one_hot(to, num_tasks, dtype=tf.float64) - tf.one_hot(
            away, num_tasks, dtype=tf.float64
        )
        size = line_search(w, direction, tf.gather(w, away))
        return i + 1, tf.maximum(w + size * direction, 0.0), tf.gather(g, away) - tf.gather(g, to)

    w = tf.fill([num_tasks], tf.constant(1.0 / num_tasks, tf.float64))
    _, w, _ = tf.while_loop(
        lambda i, w, gap: tf.logical_and(i < iterations, gap > 1e-12),
        step,
        [tf.constant(0), w, tf.constant(1.0, tf.float64)],
    )
    return w


def min_norm_weights(gram, num_tasks, iterations):
    """`argmin_{w in simplex} |sum_t w_t g_t|^2`, from the Gram matrix."""
    g = normalized_gram(gram)

    def line_search(w, d, max_step):
        # |g_w + s g_d|^2 is a parabola in s: its minimizer, clipped.
        slope, curvature = dot(d, g, w), dot(d, g, d)
        free = tf.math.divide_no_nan(-slope, curvature)
        return tf.clip_by_value(tf.where(curvature > 0.0, free, max_step), 0.0, max_step)

    return pairwise_frank_wolfe(
        num_tasks, lambda w: tf.linalg.matvec(g, w), line_search, iterations
    )


def dot(a, g, b):
    return tf.reduce_sum(a * tf.linalg.matvec(g, b))


def dual_cone_weights(gram, num_tasks, max_iterations):
    """Row i: the weights `v` with `G^T v` the projection of `g_i` onto the
    dual cone `{x : g_t . x >= 0 for all t}`.

    By Proposition 1 of Quinton & Rey (2024), `v` solves the quadratic
    program `min_v v^T G v` subject to `v >= e_i`. With `v = e_i + s` this is
    the non-negative least squares `min_{s >= 0} |g_i + sum_t s_t g_t|^2`,
    solved here for every i at once by the active-set method of Lawson &
    Hanson (1974), in float64. It is exact after at most a few times T
    iterations when the gradients are linearly independent; first-order
    methods (projected gradient, FISTA) need thousands when tasks conflict
    strongly or their gradient norms differ by orders of magnitude. Stops
    when no problem has a violated constraint, or after `max_iterations`.
    """
    n = num_tasks
    g = normalized_gram(gram)
    eye = tf.eye(n, dtype=tf.float64)
    zeros = tf.zeros_like(eye)
    inf = tf.constant(float("inf"), tf.float64)
    rhs = -g  # row i: -(G e_i)

    def step(i, s, free, done):
        # The least-squares solution on each problem's free set.
        pairs = tf.logical_and(free[:, :, None], free[:, None, :])
        system = tf.where(pairs, g + 1e-12 * eye, eye)
        z = tf.linalg.solve(system, tf.where(free, rhs, zeros)[..., None])[..., 0]
        z = tf.where(free, z, zeros)
        feasible = tf.reduce_all(tf.logical_or(~free, z > 0.0), axis=1)
        # Feasible: accept z, free the most violated constraint, if any.
        violation = tf.where(free, -inf, -tf.matmul(eye + z, g))
        worst = tf.argmax(violation, axis=1)
        grow = tf.reduce_max(violation, axis=1) > 1e-10
        added = tf.logical_and(tf.cast(tf.one_hot(worst, n), tf.bool), grow[:, None])
        grown = tf.logical_or(free, added)
        # Infeasible: step towards z until a weight reaches 0; fix it at 0.
        bad = tf.logical_and(free, z <= 0.0)
        ratio = tf.where(bad, tf.math.divide_no_nan(s, s - z), inf)
        first = tf.argmin(ratio, axis=1)
        moved = s + tf.minimum(tf.reduce_min(ratio, axis=1), 1.0)[:, None] * (z - s)
        hit = tf.logical_or(
            tf.logical_and(bad, moved <= 1e-14),
            tf.logical_and(tf.cast(tf.one_hot(first, n), tf.bool), bad),
        )
        moved = tf.where(hit, zeros, tf.maximum(moved, 0.0))
        shrunk = tf.logical_and(free, ~hit)

        keep = done[:, None]
        fit = feasible[:, None]
        s = tf.where(keep, s, tf.where(fit, z, moved))
        free = tf.where(keep, free, tf.where(fit, grown, shrunk))
        done = tf.logical_or(done, tf.logical_and(feasible, ~grow))
        return i + 1, s, free, done

    _, s, _, _ = tf.while_loop(
        lambda i, s, free, done: tf.logical_and(i < max_iterations, ~tf.reduce_all(done)),
        step,
        [tf.constant(0), tf.zeros([n, n], tf.float64), tf.zeros([n, n], tf.bool),
         tf.zeros([n], tf.bool)],
    )
    return eye + s
