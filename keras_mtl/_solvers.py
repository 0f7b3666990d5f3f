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


def min_norm_weights(gram, num_tasks, max_iterations):
    """`argmin_{w in simplex} |sum_t w_t g_t|^2`, from the Gram matrix.

    The min-norm point of the convex hull of the `g_t`, solved exactly as
    one non-negative least squares problem: for columns `b_t = (1, g_t /
    sqrt(s))` and `e = (1, 0)`, `u = argmin_{u >= 0} |e - sum_t u_t b_t|^2`
    gives `w = u / sum(u)`. (Write `u = r w` with `w` on the simplex: the
    objective is `(1 - r)^2 + r^2 |g_w|^2 / s`, whose minimum over `r`,
    `|g_w|^2 / (s + |g_w|^2)`, increases with `|g_w|`.) Any `s > 0` gives
    the same `w`; `s` is the smallest non-zero `|g_t|^2`, an upper bound of
    the min-norm, so that the smallest gradients are not lost next to the
    `1`s. The Gram matrix of the `b_t` is `1 1^T + G / s`.

    Args:
        gram: `[T, T]` Gram matrix of the task gradients.
        num_tasks: int, `T`.
        max_iterations: int, the most active-set iterations (see
            `nonnegative_least_squares`).

    Returns:
        float64 `[T]` on the simplex (uniform if no iteration found a
        support, which needs `max_iterations >= 2`).
    """
    g = normalized_gram(gram)
    squares = tf.linalg.diag_part(g)
    s = tf.reduce_min(tf.where(squares > 0.0, squares, tf.reduce_max(squares)))
    q = 1.0 + tf.math.divide_no_nan(g, s)
    u = nonnegative_least_squares(q, tf.ones([1, num_tasks], tf.float64), max_iterations)[0]
    total = tf.reduce_sum(u)
    return tf.where(total > 0.0, u / tf.where(total > 0.0, total, 1.0), 1.0 / num_tasks)


def dot(a, g, b):
    return tf.reduce_sum(a * tf.linalg.matvec(g, b))


def dual_cone_weights(gram, num_tasks, max_iterations):
    """Row i: the weights `v` with `G^T v` the projection of `g_i` onto the
    dual cone `{x : g_t . x >= 0 for all t}`.

    By Proposition 1 of Quinton & Rey (2024), `v` solves the quadratic
    program `min_v v^T G v` subject to `v >= e_i`. With `v = e_i + s` this is
    the non-negative least squares `min_{s >= 0} |g_i + sum_t s_t g_t|^2`,
    solved for every i at once by `nonnegative_least_squares`. That solver
    works on unit-norm gradients (the same cone), so the result does not
    depend on how the gradients' norms compare.

    Args:
        gram: `[T, T]` Gram matrix of the task gradients.
        num_tasks: int, `T`.
        max_iterations: int, the most active-set iterations.

    Returns:
        float64 `[T, T]`, row i the weights `v` of task i's projection.
    """
    g = normalized_gram(gram)
    return tf.eye(num_tasks, dtype=tf.float64) + nonnegative_least_squares(g, -g, max_iterations)


# Relative to a problem scaled to unit diagonal and max |c| = 1: the ridge
# that keeps every system solvable (duplicate gradients, more tasks than
# dimensions), and the violation below which the optimum is reached (about
# a thousand times float64's epsilon, well above the rounding of `c - q x`).
RIDGE = 1e-12
TOLERANCE = 1e-13


def nonnegative_least_squares(q, c, max_iterations):
    """Row b: `argmin_{x >= 0} x^T q x - 2 c_b . x`, for a PSD `q` `[n, n]`.

    (With `q = A^T A` and `c_b = A^T y_b` this is `min_{x >= 0} |A x - y_b|`.)
    The active-set method of Lawson & Hanson (1974, "Solving Least Squares
    Problems", ch. 23), for every row of `c` at once, in float64: free the
    variable with the largest negative gradient, solve the unconstrained
    problem on the free variables, and if that leaves some negative, step
    back to where the first reaches 0 and fix it there. Exact (up to
    rounding) once it stops, which takes a little more than one iteration
    per positive variable; first-order methods (projected gradient, FISTA,
    Frank-Wolfe) need thousands when the columns of `A` are nearly
    dependent or of very different norms.

    Differences from the textbook: the variables are scaled so that `q` has
    a unit diagonal, and each row of `c` to a largest entry of 1 (Jacobi
    scaling; the solution scales back exactly), so that the tolerances are
    relative to the problem, whatever the norms of `A`'s columns; and
    `RIDGE * I` is added to the scaled `q`, which changes the solution by
    about `RIDGE` relative, so that linearly dependent free columns (which
    exact arithmetic never frees, rounding can) still give a solvable
    system. Stops when no row has a violation above `TOLERANCE`, or after
    `max_iterations`.

    Args:
        q: float `[n, n]`, symmetric positive semi-definite.
        c: float `[B, n]`, one problem per row.
        max_iterations: int, the most iterations (each frees or fixes at
            least one variable of every unfinished problem).

    Returns:
        float64 `[B, n]`, non-negative.
    """
    q, c = tf.cast(q, tf.float64), tf.cast(c, tf.float64)
    n = q.shape[-1]
    scale = tf.sqrt(tf.maximum(tf.linalg.diag_part(q), 0.0))
    q = tf.math.divide_no_nan(q, scale[:, None] * scale[None, :])
    c = tf.math.divide_no_nan(c, scale)
    size = tf.reduce_max(tf.abs(c), axis=1, keepdims=True)
    c = tf.math.divide_no_nan(c, size)
    x = _lawson_hanson(q + RIDGE * tf.eye(n, dtype=tf.float64), c, max_iterations)
    return tf.math.divide_no_nan(x * size, scale)


def _lawson_hanson(q, c, max_iterations):
    """The iterations of `nonnegative_least_squares`, on the scaled problem."""
    n = q.shape[-1]
    eye = tf.eye(n, dtype=tf.float64)
    zeros = tf.zeros_like(c)
    inf = tf.constant(float("inf"), tf.float64)

    def step(i, x, free, done):
        # The unconstrained solution on each problem's free variables.
        pairs = tf.logical_and(free[:, :, None], free[:, None, :])
        system = tf.where(pairs, q, eye)
        z = tf.linalg.solve(system, tf.where(free, c, zeros)[..., None])[..., 0]
        z = tf.where(free, z, zeros)
        feasible = tf.reduce_all(tf.logical_or(~free, z > 0.0), axis=1)
        # Feasible: accept z, free the most violated constraint, if any.
        violation = tf.where(free, -inf, c - tf.matmul(z, q))
        worst = tf.argmax(violation, axis=1)
        tolerance = TOLERANCE * (1.0 + tf.reduce_sum(tf.abs(z), axis=1))
        grow = tf.reduce_max(violation, axis=1) > tolerance
        added = tf.logical_and(tf.cast(tf.one_hot(worst, n), tf.bool), grow[:, None])
        grown = tf.logical_or(free, added)
        # Infeasible: step towards z until a variable reaches 0; fix it at 0.
        bad = tf.logical_and(free, z <= 0.0)
        ratio = tf.where(bad, tf.math.divide_no_nan(x, x - z), inf)
        first = tf.argmin(ratio, axis=1)
        moved = x + tf.minimum(tf.reduce_min(ratio, axis=1), 1.0)[:, None] * (z - x)
        negligible = TOLERANCE * tf.reduce_sum(x, axis=1, keepdims=True)
        hit = tf.logical_and(
            bad,
            tf.logical_or(moved <= negligible, tf.cast(tf.one_hot(first, n), tf.bool)),
        )
        moved = tf.where(hit, zeros, tf.maximum(moved, 0.0))
        shrunk = tf.logical_and(free, ~hit)

        keep = done[:, None]
        fit = feasible[:, None]
        x = tf.where(keep, x, tf.where(fit, z, moved))
        free = tf.where(keep, free, tf.where(fit, grown, shrunk))
        done = tf.logical_or(done, tf.logical_and(feasible, ~grow))
        return i + 1, x, free, done

    _, x, _, _ = tf.while_loop(
        lambda i, x, free, done: tf.logical_and(i < max_iterations, ~tf.reduce_all(done)),
        step,
        [tf.constant(0), zeros, tf.zeros_like(c, tf.bool), tf.zeros_like(c[:, 0], tf.bool)],
    )
    return x
