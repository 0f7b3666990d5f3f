"""Each weighting method's rule, checked against its paper on hand-made inputs.

The methods are called directly (no model): a `LossWeighting` maps losses to
weights, a `GradientWeighting` maps the Gram matrix `G G^T` of hand-made
task gradients `G` to coefficients `c` (the update is `c @ G`).
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mtl import _random, _solvers, weighting


def _context(step=0, seed=0, epoch_start=False):
    return weighting.Context(
        step=tf.constant(step, tf.int64), seed=seed, epoch_start=tf.constant(epoch_start)
    )


def _built(method, num_tasks):
    method.build(num_tasks)
    return method


def _coefficients(method, grads, losses=None):
    """The method's coefficients (float64) for the rows of `grads`."""
    grads = np.asarray(grads, np.float32)
    n = len(grads)
    _built(method, n)
    gram = tf.constant(grads @ grads.T)
    losses = tf.ones([n]) if losses is None else tf.constant(losses, tf.float32)
    return method.coefficients(gram, losses, _context()).numpy().astype(np.float64)


def _simplex_grid(num_tasks, resolution):
    """Every point of the simplex whose coordinates are multiples of 1/resolution."""
    points = [
        p + (resolution - sum(p),)
        for p in itertools.product(range(resolution + 1), repeat=num_tasks - 1)
        if sum(p) <= resolution
    ]
    return np.array(points, np.float64) / resolution


# Hand-made gradient sets: conflicting, nearly opposite, of very different
# norms, and with more tasks than dimensions.
def _gradient_sets():
    rng = np.random.default_rng(7)
    sets = {"random_3x10": rng.normal(size=(3, 10)), "random_5x40": rng.normal(size=(5, 40))}
    a = rng.normal(size=20)
    opposite = 0.01 * rng.normal(size=(4, 20))
    opposite[0::2] += a
    opposite[1] -= 1.5 * a
    opposite[3] -= 0.7 * a
    sets["nearly_opposite_4x20"] = opposite
    sets["norms_1_to_1000_4x12"] = rng.normal(size=(4, 12)) * np.logspace(0, 3, 4)[:, None]
    scaled = rng.normal(size=(3, 8))
    scaled[1] = -0.9 * scaled[0] * 1000 + scaled[1]
    sets["conflict_and_scale_3x8"] = scaled
    sets["more_tasks_than_dims_5x3"] = rng.normal(size=(5, 3))
    return {k: v.astype(np.float32) for k, v in sets.items()}


GRADIENT_SETS = _gradient_sets()


def _scaled_problem(seed, ratio):
    """2-5 random gradients, task 1 conflicting with task 0, norms spread over [1, ratio]."""
    rng = np.random.default_rng(seed)
    n = 2 + seed % 4
    g = rng.normal(size=(n, n + rng.integers(0, 4)))
    g[1] -= rng.uniform(0.5, 2.0) * g[0]
    scales = ratio ** rng.uniform(0, 1, n)
    scales[rng.permutation(n)[:2]] = [1.0, ratio]
    return g * scales[:, None]


# Exact references, in float64, by enumerating the possible supports: small T
# only, and independent of the solvers under test.
def _exact_min_norm_weights(grads):
    """argmin_{w in simplex} |w @ grads|: the best affine-hull minimizer w >= 0."""
    g = np.asarray(grads, np.float64)
    n = len(g)
    best, value = None, np.inf
    for support in itertools.chain.from_iterable(
        itertools.combinations(range(n), k) for k in range(1, n + 1)
    ):
        s = list(support)
        # min |w_S @ g_S|^2 s.t. sum(w_S) = 1: its KKT system.
        kkt = np.block([[g[s] @ g[s].T, np.ones((len(s), 1))], [np.ones((1, len(s))), 0.0]])
        solution = np.linalg.lstsq(kkt, np.r_[np.zeros(len(s)), 1.0], rcond=None)[0]
        w = np.zeros(n)
        w[s] = solution[:-1]
        if np.all(w >= 0) and np.sum((w @ g) ** 2) < value:
            best, value = w, np.sum((w @ g) ** 2)
    return best


def _exact_dual_cone_projection(grads, i):
    """The projection of g_i onto {x : g_t . x >= 0}: min |g_i + s @ grads| over s >= 0."""
    g = np.asarray(grads, np.float64)
    best, value = g[i], np.inf if np.any(g @ g[i] < 0) else 0.0
    for support in itertools.chain.from_iterable(
        itertools.combinations(range(len(g)), k) for k in range(1, len(g) + 1)
    ):
        s = np.linalg.lstsq(g[list(support)].T, -g[i], rcond=None)[0]
        r = g[i] + s @ g[list(support)]
        if np.all(s >= 0) and r @ r < value:
            best, value = r, r @ r
    return best


NORM_RATIOS = [1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3]


# ---------------------------------------------------------------- PCGrad
def test_pcgrad_projects_two_conflicting_gradients():
    # g1 = (1, 0), g2 = (-1, 1): g1 . g2 = -1 < 0, so
    # g1' = g1 + g2 / 2 = (0.5, 0.5) and g2' = g2 + g1 = (0, 1).
    grads = [[1.0, 0.0], [-1.0, 1.0]]
    c = _coefficients(weighting.PCGrad(), grads)
    np.testing.assert_allclose(c, [2.0, 1.5], rtol=1e-6)
    np.testing.assert_allclose(c @ np.array(grads), [0.5, 1.5], rtol=1e-6)


def test_pcgrad_leaves_non_conflicting_gradients_summed():
    c = _coefficients(weighting.PCGrad(), [[1.0, 0.0], [1.0, 1.0], [0.5, 2.0]])
    np.testing.assert_allclose(c, [1.0, 1.0, 1.0], rtol=1e-6)


# ------------------------------------------------------------------ MGDA
def test_mgda_two_tasks_is_the_closed_form_min_norm_point():
    rng = np.random.default_rng(0)
    for _ in range(5):
        g = rng.normal(size=(2, 6)).astype(np.float32)
        g[1] -= 1.5 * g[0]  # conflicting
        c = _coefficients(weighting.MGDA(), g)
        g64 = g.astype(np.float64)
        alpha = np.clip((g64[1] - g64[0]) @ g64[1] / np.sum((g64[0] - g64[1]) ** 2), 0, 1)
        np.testing.assert_allclose(c, [alpha, 1 - alpha], atol=1e-6)
        a = np.linspace(0, 1, 100001)[:, None]
        grid = a * g64[0] + (1 - a) * g64[1]
        assert np.sum((c @ g64) ** 2) <= np.min(np.sum(grid**2, axis=1)) * (1 + 1e-6)


def test_mgda_two_tasks_at_a_vertex():
    # g1 . g2 = 3 >= |g1|^2 = 1: the min-norm point is g1 itself.
    c = _coefficients(weighting.MGDA(), [[1.0, 0.0], [3.0, 1.0]])
    np.testing.assert_allclose(c, [1.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("name", ["random_3x10", "conflict_and_scale_3x8"])
def test_mgda_three_tasks_matches_brute_force_over_the_simplex(name):
    g = GRADIENT_SETS[name].astype(np.float64)
    c = _coefficients(weighting.MGDA(), g)
    assert np.all(c >= 0) and abs(c.sum() - 1) < 1e-6
    grid = _simplex_grid(3, 600)
    gram = g @ g.T
    brute = np.min(np.einsum("pi,ij,pj->p", grid, gram, grid))
    ours = c @ gram @ c
    # The grid only approximates the minimum; ours may be lower, never higher.
    assert ours <= brute + 1e-6 * np.trace(gram)
    # Optimality (KKT): every g_t . d >= |d|^2, with equality where c_t > 0.
    # The Gram matrix is float32: its rounding moves g_t . d by about
    # eps * |g_t| * sum_k c_k |g_k|, hence the tolerance.
    d = c @ g
    norms = np.linalg.norm(g, axis=1)
    tolerance = 1e-5 * norms * (c @ norms)
    assert np.all(g @ d >= d @ d - tolerance)
    np.testing.assert_array_less(np.abs(g @ d - d @ d)[c > 1e-4], tolerance[c > 1e-4])


# Task 0's gradient is ~100x the others': Frank-Wolfe (100 iterations) gave
# w = [0.009048, 0.042319, 0.948633] and min_t g_t . d = -5.85e-5.
MGDA_NORMS_100X = [
    [-0.193, 0.497, 0.419, -0.735],
    [-0.00453, 0.00397, 0.00091, -0.00793],
    [0.00198, -0.00491, -0.00437, 0.00728],
]


def test_mgda_is_exact_when_norms_differ_100x():
    g = np.array(MGDA_NORMS_100X)
    expected = _exact_min_norm_weights(g)
    np.testing.assert_allclose(expected, [0.0099048, 0.0, 0.9900952], atol=1e-7)
    c = _coefficients(weighting.MGDA(), g)  # from the float32 Gram matrix
    np.testing.assert_allclose(c, expected, atol=1e-6)
    w = _solvers.min_norm_weights(tf.constant(g @ g.T), 3, 100).numpy()
    np.testing.assert_allclose(w, expected, atol=1e-9)
    d = w @ g
    assert np.min(g @ d) > 0  # a common descent direction
    norms = np.linalg.norm(g, axis=1)
    np.testing.assert_array_less(np.abs(g @ d - d @ d)[[0, 2]], 1e-10 * norms[[0, 2]] * (w @ norms))


@pytest.mark.parametrize("ratio", NORM_RATIOS)
@pytest.mark.slow
def test_mgda_matches_the_exact_min_norm_point_at_any_norm_ratio(ratio):
    for seed in range(6):
        g = _scaled_problem(seed, ratio)
        n = len(g)
        expected = _exact_min_norm_weights(g)
        w = _solvers.min_norm_weights(tf.constant(g @ g.T), n, 100).numpy()
        np.testing.assert_allclose(w, expected, atol=1e-8, err_msg=f"seed {seed}")
        # Optimality (KKT): g_t . d >= |d|^2 for every t, with equality on the support.
        d = w @ g
        norms = np.linalg.norm(g, axis=1)
        tolerance = 1e-10 * norms * (w @ norms)
        assert np.all(g @ d >= d @ d - tolerance), seed
        on = expected > 0
        np.testing.assert_array_less(np.abs(g @ d - d @ d)[on], tolerance[on])
        # Through the layer (a float64 Gram matrix in, float32 weights out).
        c = _built(weighting.MGDA(), n).coefficients(tf.constant(g @ g.T), None, None)
        np.testing.assert_allclose(c.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "grads",
    [
        [[1.0, 2.0], [1.0, 2.0], [-2.0, 1.0]],  # duplicates
        [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 1.0]],  # a zero gradient
        [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]],  # opposite: Pareto-stationary
        [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]],  # collinear
        [[1.0, 0.2], [-0.3, 1.0], [0.5, 0.5], [-1.0, -1.0], [2.0, -0.1]],  # T > dimension + 1
    ],
)
def test_mgda_degenerate_gradients_give_the_min_norm_point(grads):
    g = np.array(grads)
    w = _solvers.min_norm_weights(tf.constant(g @ g.T), len(g), 100).numpy()
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    expected = _exact_min_norm_weights(g) @ g
    np.testing.assert_allclose(w @ g, expected, atol=1e-9 * np.abs(g).max())


def test_mgda_gradients_option_sets_the_attribute():
    assert weighting.MGDA().gradients == "representation"
    assert weighting.MGDA(gradients="parameters").gradients == "parameters"
    with pytest.raises(ValueError, match="gradients"):
        weighting.MGDA(gradients="last_layer")


# ---------------------------------------------------------------- CAGrad
def _cagrad_objective(w, gram, c):
    """g_w . g0 + sqrt(phi) |g_w| for rows `w` of simplex points."""
    b = gram.mean(axis=1)
    radius = c * np.sqrt(gram.mean())
    return w @ b + radius * np.sqrt(np.maximum(np.einsum("pi,ij,pj->p", w, gram, w), 0))


def _cagrad_brute_force(gram, c, resolution):
    grid = _simplex_grid(len(gram), resolution)
    values = _cagrad_objective(grid, gram, c)
    return grid[np.argmin(values)], np.min(values)


def _cagrad_weights(coef, c):
    """The simplex weights w behind CAGrad's coefficients (1/T + lambda w) / (1 + c^2)."""
    shifted = coef * (1 + c**2) - 1 / len(coef)
    return shifted / shifted.sum()


@pytest.mark.parametrize("c", [0.5, 2.0])
@pytest.mark.parametrize("name", ["random_3x10", "conflict_and_scale_3x8"])
def test_cagrad_minimizes_its_objective_like_brute_force(name, c):
    g = GRADIENT_SETS[name].astype(np.float64)
    gram = g @ g.T
    w = _cagrad_weights(_coefficients(weighting.CAGrad(c=c), g), c)
    assert np.all(w >= -1e-6)
    _, brute = _cagrad_brute_force(gram, c, 600)
    # The grid only approximates the minimum; ours may be lower, never higher.
    scale = np.sqrt(np.trace(gram)) * np.sqrt(gram.mean())
    assert _cagrad_objective(w[None], gram, c)[0] <= brute + 1e-6 * scale


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_cagrad_direction_matches_brute_force(c):
    # (Only where g_w is well away from 0; otherwise its direction, and d,
    # is ill-conditioned.)
    g = GRADIENT_SETS["random_3x10"].astype(np.float64)
    gram = g @ g.T
    coef = _coefficients(weighting.CAGrad(c=c), g)
    w_brute, _ = _cagrad_brute_force(gram, c, 600)
    gw = w_brute @ g
    expected = (g.mean(axis=0) + c * np.sqrt(gram.mean()) * gw / np.linalg.norm(gw)) / (1 + c**2)
    # The grid's resolution (1/600) moves the brute-force d by ~1e-3 relative.
    np.testing.assert_allclose(coef @ g, expected, atol=1e-2 * np.linalg.norm(expected))


def test_cagrad_identical_gradients_gives_the_closed_form():
    # g1 = g2 = g: d = g0 + c |g0| g / |g| = (1 + c) g, divided by 1 + c^2.
    c = _coefficients(weighting.CAGrad(c=0.5), [[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(c.sum(), 1.5 / 1.25, rtol=1e-6)


def test_cagrad_without_radius_or_rescale_is_the_plain_mean():
    c = _coefficients(weighting.CAGrad(c=0.0), GRADIENT_SETS["random_3x10"])
    np.testing.assert_allclose(c, [1 / 3] * 3, rtol=1e-6)
    plain = _coefficients(weighting.CAGrad(c=0.5, rescale=False), GRADIENT_SETS["random_3x10"])
    scaled = _coefficients(weighting.CAGrad(c=0.5), GRADIENT_SETS["random_3x10"])
    np.testing.assert_allclose(plain, scaled * 1.25, rtol=1e-5)


# ---------------------------------------------------------------- UPGrad
def _conflict_margin(grads, c):
    """min_t g_t . d / (|g_t| sum_k c_k |g_k|), in float64 (>= 0 means no conflict)."""
    g = grads.astype(np.float64)
    norms = np.linalg.norm(g, axis=1)
    return np.min((g @ (c @ g)) / (norms * (np.abs(c) @ norms)))


@pytest.mark.parametrize("name", sorted(GRADIENT_SETS))
def test_upgrad_never_conflicts_with_a_task(name):
    g = GRADIENT_SETS[name]
    c = _coefficients(weighting.UPGrad(), g)
    assert _conflict_margin(g, c) >= -1e-5
    assert np.linalg.norm(c @ g) > 0


def test_upgrad_two_conflicting_gradients_by_hand():
    # g1 = (1, 0), g2 = (-1, 1): the projections are (0.5, 0.5) = g1 + g2/2
    # and (0, 1) = g1 + g2; their mean is g1 + 0.75 g2.
    c = _coefficients(weighting.UPGrad(), [[1.0, 0.0], [-1.0, 1.0]])
    np.testing.assert_allclose(c, [1.0, 0.75], rtol=1e-6)


def test_upgrad_is_the_mean_without_conflict():
    rng = np.random.default_rng(3)
    g = np.abs(rng.normal(size=(4, 9)))  # non-negative: no pair conflicts
    c = _coefficients(weighting.UPGrad(), g)
    np.testing.assert_allclose(c, [0.25] * 4, rtol=1e-6)


def test_upgrad_does_not_conflict_when_norms_differ_1e5x():
    # g1 = (1, 0), g2 = 1e-5 (-1, 1). The projections are (0.5, 0.5) and
    # (0, 1e-5), so d = (0.25, 0.250005) and g2 . d = +5e-11. A fixed 1e-12
    # ridge on the trace-normalized Gram matrix gave d = (0.251244,
    # 0.248761) and g2 . d = -2.48e-8.
    g = np.array([[1.0, 0.0], [-1e-5, 1e-5]])
    v = _solvers.dual_cone_weights(tf.constant(g @ g.T), 2, 10).numpy()
    np.testing.assert_allclose(v @ g, [[0.5, 0.5], [0.0, 1e-5]], rtol=1e-9, atol=1e-15)
    d = v.mean(axis=0) @ g
    np.testing.assert_allclose(d, [0.25, 0.250005], rtol=1e-9)
    np.testing.assert_allclose(g[1] @ d, 5e-11, rtol=1e-6)
    c = _coefficients(weighting.UPGrad(), g)  # from the float32 Gram matrix
    np.testing.assert_allclose(c @ g, [0.25, 0.250005], rtol=1e-7)
    assert _conflict_margin(g, c) >= 0


@pytest.mark.parametrize("ratio", NORM_RATIOS + [1e4, 1e5, 1e6])
def test_upgrad_matches_the_exact_projections_at_any_norm_ratio(ratio):
    for seed in range(6):
        g = _scaled_problem(seed, ratio)
        n = len(g)
        norms = np.linalg.norm(g, axis=1)
        v = _solvers.dual_cone_weights(tf.constant(g @ g.T), n, 5 * n).numpy()
        for i in range(n):
            projection = v[i] @ g
            expected = _exact_dual_cone_projection(g, i)
            np.testing.assert_allclose(projection, expected, atol=1e-9 * norms[i])
            assert np.all(g @ projection >= -1e-9 * norms * np.linalg.norm(projection))
        d = v.mean(axis=0) @ g
        assert np.all(g @ d >= -1e-9 * norms * np.linalg.norm(d)), seed


@pytest.mark.parametrize(
    "grads",
    [
        [[1.0, 2.0], [1.0, 2.0], [-2.0, 0.5]],  # duplicates
        [[1.0, 0.0], [-1.0, 0.1], [-1.0, 0.1]],  # duplicates, both conflicting
        [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 1.0]],  # a zero gradient
        [[1.0, 0.0], [0.0, 1.0], [-1.0, -0.5], [0.3, -1.0]],  # more tasks than dimensions
    ],
)
def test_upgrad_degenerate_gradients_give_the_exact_projections(grads):
    g = np.array(grads)
    v = _solvers.dual_cone_weights(tf.constant(g @ g.T), len(g), 5 * len(g)).numpy()
    assert np.all(np.isfinite(v))
    for i in range(len(g)):
        expected = _exact_dual_cone_projection(g, i)
        np.testing.assert_allclose(v[i] @ g, expected, atol=1e-9 * np.abs(g).max())


@pytest.mark.slow
def test_exact_solvers_under_xla_match_the_references():
    mgda = np.array(MGDA_NORMS_100X)
    upgrad = np.array([[1.0, 0.0], [-1e-5, 1e-5]])

    @tf.function(jit_compile=True)
    def solve(mgda_gram, upgrad_gram):
        return (
            _solvers.min_norm_weights(mgda_gram, 3, 100),
            _solvers.dual_cone_weights(upgrad_gram, 2, 10),
        )

    w, v = solve(tf.constant(mgda @ mgda.T), tf.constant(upgrad @ upgrad.T))
    np.testing.assert_allclose(w, _exact_min_norm_weights(mgda), atol=1e-9)
    np.testing.assert_allclose(v.numpy().mean(axis=0) @ upgrad, [0.25, 0.250005], rtol=1e-9)


# -------------------------------------------------------------- GradNorm
def test_gradnorm_moves_weight_from_the_larger_gradient():
    # |g1| = 2, |g2| = 1, equal loss ratios: G = (2, 1), target 1.5 each,
    # so w <- (1, 1) - 0.1 * (+2, -1) = (0.8, 1.1), renormalized to sum 2.
    method = _built(weighting.GradNorm(learning_rate=0.1), 2)
    gram = tf.constant([[4.0, 0.0], [0.0, 1.0]])
    first = method.coefficients(gram, tf.constant([1.0, 1.0]), _context())
    np.testing.assert_allclose(first, [1.0, 1.0])  # the weights before the update
    expected = np.array([0.8, 1.1]) * 2 / 1.9
    np.testing.assert_allclose(method.task_weights.numpy(), expected, rtol=1e-6)


def test_gradnorm_follows_the_loss_ratios():
    method = _built(weighting.GradNorm(alpha=1.5, learning_rate=0.1), 2)
    gram = tf.constant([[4.0, 0.0], [0.0, 1.0]])
    method.coefficients(gram, tf.constant([1.0, 1.0]), _context(0))
    w = method.task_weights.numpy().astype(np.float64)
    # Second step: task 1's loss halved (its initial loss stays 1).
    used = method.coefficients(gram, tf.constant([0.5, 1.0]), _context(1)).numpy()
    np.testing.assert_allclose(used, w, rtol=1e-6)
    norms = np.array([2.0, 1.0])
    ratios = np.array([0.5, 1.0])
    g = w * norms
    target = g.mean() * (ratios / ratios.mean()) ** 1.5
    expected = np.maximum(w - 0.1 * np.sign(g - target) * norms, 0)
    renormalized = 2 * expected / expected.sum()
    np.testing.assert_allclose(method.task_weights.numpy(), renormalized, rtol=1e-6)


def test_gradnorm_clips_at_zero_and_renormalizes_to_the_task_count():
    method = _built(weighting.GradNorm(learning_rate=1.0), 3)
    gram = tf.constant(np.diag([9.0, 1.0, 1.0]).astype(np.float32))
    method.coefficients(gram, tf.constant([1.0, 1.0, 1.0]), _context())
    w = method.task_weights.numpy()
    assert w[0] == 0.0  # 1 - 1.0 * 3 < 0
    np.testing.assert_allclose(w.sum(), 3.0, rtol=1e-6)
    np.testing.assert_allclose(w[1], w[2])


# ------------------------------------------------------------------- DWA
def test_dwa_weights_over_epochs():
    method = _built(weighting.DWA(temperature=2.0), 2)
    epochs = [  # the losses of each step, per epoch
        [[2.0, 4.0], [2.0, 2.0]],  # means (2, 3)
        [[1.0, 3.0], [1.0, 3.0]],  # means (1, 3)
        [[0.5, 3.0], [0.5, 1.5]],  # means (0.5, 2.25)
        [[0.5, 1.0]],
    ]
    seen = []
    for epoch in epochs:
        for i, losses in enumerate(epoch):
            w, extra = method.loss_weights(tf.constant(losses), _context(epoch_start=i == 0))
            assert extra is None
            seen.append(w.numpy())

    def expected(ratio):
        e = np.exp(np.array(ratio) / 2.0)
        return 2 * e / e.sum()

    for w in seen[:4]:  # the first two epochs
        np.testing.assert_allclose(w, [1.0, 1.0])
    for w in seen[4:6]:  # epoch 2: Lbar(1) / Lbar(0)
        np.testing.assert_allclose(w, expected([1 / 2, 3 / 3]), rtol=1e-6)
    np.testing.assert_allclose(seen[6], expected([0.5 / 1, 2.25 / 3]), rtol=1e-6)


# ------------------------------------------------------------------- RLW
def test_rlw_weights_are_a_reproducible_softmax_of_normal_draws():
    method = _built(weighting.RLW(), 4)
    losses = tf.ones([4])
    w = method.loss_weights(losses, _context(step=5, seed=3))[0].numpy()
    assert np.all(w > 0)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(
        w, method.loss_weights(losses, _context(step=5, seed=3))[0].numpy()
    )
    z = _random.normal(3, tf.constant(5, tf.int64), 4).numpy()
    np.testing.assert_allclose(w, np.exp(z) / np.exp(z).sum(), rtol=1e-6)
    other_step = method.loss_weights(losses, _context(step=6, seed=3))[0].numpy()
    other_seed = method.loss_weights(losses, _context(step=5, seed=4))[0].numpy()
    assert np.max(np.abs(w - other_step)) > 1e-3
    assert np.max(np.abs(w - other_seed)) > 1e-3


# ------------------------------------------------------------------ FAMO
def test_famo_weights_give_the_reference_gradient():
    method = _built(weighting.FAMO(), 3)
    method.logits.assign([0.3, -0.2, 0.1])
    theta = tf.Variable([0.5, -1.0, 2.0])
    targets = tf.constant([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])

    def losses():
        return tf.reduce_sum(tf.square(targets - theta[None, :]), axis=1) + 0.1

    # Reference: minimize sum_t (z_t / c) log D_t, c = sum_t z_t / D_t constant.
    with tf.GradientTape() as tape:
        d = losses() + 1e-8
        z = tf.nn.softmax(method.logits)
        c = tf.stop_gradient(tf.reduce_sum(z / d))
        reference = tf.reduce_sum(z / c * tf.math.log(d))
    expected = tape.gradient(reference, theta)
    with tf.GradientTape() as tape:
        current = losses()
        w, extra = method.loss_weights(tf.stop_gradient(current), _context())
        ours = tf.reduce_sum(w * current)
    assert extra is None
    np.testing.assert_allclose(tape.gradient(ours, theta), expected, rtol=1e-5)
    z = np.exp([0.3, -0.2, 0.1]) / np.exp([0.3, -0.2, 0.1]).sum()
    dn = current.numpy().astype(np.float64) + 1e-8
    np.testing.assert_allclose(w, z / (np.sum(z / dn) * dn), rtol=1e-5)


def test_famo_logits_take_torch_style_adam_steps():
    gamma, lr = 0.01, 0.025
    method = _built(weighting.FAMO(gamma=gamma, learning_rate=lr), 3)
    xi, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    steps = [([1.0, 2.0, 4.0], [0.5, 1.9, 3.0]), ([0.6, 1.8, 3.1], [0.55, 1.0, 3.0])]
    for t, (before, after) in enumerate(steps, start=1):
        method.after_update(tf.constant(before), tf.constant(after), _context(step=t))
        z = np.exp(xi) / np.exp(xi).sum()
        delta = np.log(np.array(before) + 1e-8) - np.log(np.array(after) + 1e-8)
        jacobian = np.diag(z) - np.outer(z, z)
        grad = jacobian.T @ delta + gamma * xi
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        xi = xi - lr / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
        np.testing.assert_allclose(method.logits.numpy(), xi, rtol=1e-5, atol=1e-7)
        if t == 1:  # task 1's loss fell least: its logit grows most
            assert np.argmax(method.logits.numpy()) == 1


# ----------------------------------------------------------- Uncertainty
def test_uncertainty_gradient_with_respect_to_log_variances():
    method = _built(weighting.Uncertainty(initial_log_variance=0.5), 2)
    losses = tf.constant([2.0, 0.25])
    with tf.GradientTape() as tape:
        w, extra = method.loss_weights(losses, _context())
        objective = tf.reduce_sum(w * losses) + extra
    grads = tape.gradient(objective, method.log_variances)
    # d/ds_t [exp(-s_t) L_t + s_t] = 1 - exp(-s_t) L_t
    expected = 1 - np.exp(-0.5) * np.array([2.0, 0.25])
    np.testing.assert_allclose([g.numpy() for g in grads], expected, rtol=1e-6)


# ------------------------------------------------ every method, XLA and config
LOSS_METHODS = {
    "Uncertainty": lambda: weighting.Uncertainty(initial_log_variance=0.2),
    "DWA": lambda: weighting.DWA(temperature=1.5),
    "RLW": lambda: weighting.RLW(),
    "FAMO": lambda: weighting.FAMO(gamma=0.02, learning_rate=0.05),
}
GRADIENT_METHODS = {
    "PCGrad": lambda: weighting.PCGrad(),
    "MGDA": lambda: weighting.MGDA(gradients="parameters", iterations=50),
    "CAGrad": lambda: weighting.CAGrad(c=0.4, rescale=False, iterations=80),
    "GradNorm": lambda: weighting.GradNorm(alpha=1.0, learning_rate=0.05),
    "UPGrad": lambda: weighting.UPGrad(),
}


def _state(method):
    return [v.numpy() for v in method.variables]


@pytest.mark.parametrize("name", sorted(LOSS_METHODS))
@pytest.mark.slow
def test_loss_method_under_xla_matches_eager(name):
    eager, compiled = _built(LOSS_METHODS[name](), 3), _built(LOSS_METHODS[name](), 3)
    run = tf.function(lambda m, losses, ctx: m.loss_weights(losses, ctx), jit_compile=True)
    after = tf.function(lambda m, a, b, ctx: m.after_update(a, b, ctx), jit_compile=True)
    for step, losses in enumerate([[1.0, 2.0, 3.0], [0.9, 1.5, 3.5], [0.7, 1.4, 2.0]]):
        ctx = _context(step=step, seed=11, epoch_start=step != 1)
        losses = tf.constant(losses)
        w_eager, _ = eager.loss_weights(losses, ctx)
        w_compiled, _ = run(compiled, losses, ctx)
        np.testing.assert_allclose(w_compiled, w_eager, rtol=1e-5)
        if eager.needs_losses_after_update:
            # Unequal improvements (equal ones give FAMO a zero gradient,
            # which Adam turns into a step on float rounding noise).
            after_losses = losses * tf.constant([0.8, 0.95, 0.6])
            eager.after_update(losses, after_losses, ctx)
            after(compiled, losses, after_losses, ctx)
    for a, b in zip(_state(eager), _state(compiled)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(GRADIENT_METHODS))
@pytest.mark.slow
def test_gradient_method_under_xla_matches_eager(name):
    run = tf.function(
        lambda m, gram, losses, ctx: m.coefficients(gram, losses, ctx), jit_compile=True
    )
    for key in ["random_5x40", "nearly_opposite_4x20"]:
        g = GRADIENT_SETS[key]
        n = len(g)
        eager, compiled = _built(GRADIENT_METHODS[name](), n), _built(GRADIENT_METHODS[name](), n)
        gram = tf.constant(g @ g.T)
        for step in range(2):
            ctx = _context(step=step, seed=5)
            losses = tf.linspace(1.0, 2.0, n) / (step + 1.0)
            c_eager = eager.coefficients(gram, losses, ctx)
            c_compiled = run(compiled, gram, losses, ctx)
            np.testing.assert_allclose(c_compiled, c_eager, rtol=1e-5, atol=1e-6)
        for a, b in zip(_state(eager), _state(compiled)):
            np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("name", sorted({**LOSS_METHODS, **GRADIENT_METHODS}))
def test_method_round_trips_through_serialization(name):
    method = {**LOSS_METHODS, **GRADIENT_METHODS}[name]()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(method))
    assert type(restored) is type(method)
    assert restored.get_config() == method.get_config()
    if isinstance(method, weighting.GradientWeighting):
        assert restored.gradients == method.gradients


@pytest.mark.parametrize(
    "name, cls",
    [
        ("dwa", weighting.DWA),
        ("RLW", weighting.RLW),
        ("famo", weighting.FAMO),
        ("mgda", weighting.MGDA),
        ("cagrad", weighting.CAGrad),
        ("grad_norm", weighting.GradNorm),
        ("upgrad", weighting.UPGrad),
        ("pcgrad", weighting.PCGrad),
        ("uncertainty", weighting.Uncertainty),
    ],
)
def test_get_finds_every_method_by_name(name, cls):
    assert type(weighting.get(name)) is cls


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: weighting.DWA(temperature=0), "temperature"),
        (lambda: weighting.FAMO(gamma=-1), "gamma"),
        (lambda: weighting.FAMO(learning_rate=0), "learning_rate"),
        (lambda: weighting.CAGrad(c=-0.5), "`c`"),
        (lambda: weighting.CAGrad(iterations=0), "iterations"),
        (lambda: weighting.GradNorm(alpha=-1), "alpha"),
    ],
)
def test_bad_arguments_name_the_parameter(make, argument):
    with pytest.raises(ValueError, match=argument):
        make()
