"""MMoE vs OMoE vs shared-bottom on the synthetic tasks of Ma et al. (KDD 2018).

Ma, Zhao, Yi, Chen, Hong & Chi, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD 2018
(https://dl.acm.org/doi/10.1145/3219819.3220007), sections 3.2, 3.3 and 5.1,
control how related two regression tasks are and watch how three multi-task
models cope.

The data (section 3.2 of the paper):

1. two orthogonal unit vectors `u1, u2` in R^d;
2. for a scale `c` and a "task correlation" `-1 <= p <= 1`, the weights
   `w1 = c u1` and `w2 = c (p u1 + sqrt(1 - p^2) u2)`, so `cos(w1, w2) = p`;
3. inputs `x` with every element drawn from N(0, 1);
4. labels `y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k`
   (the same `alpha_i, beta_i` for both tasks), `eps_k ~ N(0, 0.01)` i.i.d.

The paper leaves `c`, `m`, `alpha`, `beta` unspecified. We take them from
drawbridge/keras-mmoe's `synthetic_demo.py` (the reproduction the paper's
readers usually use): `d = 100`, `c = 0.3`, `m = 5`, `alpha_i, beta_i ~
N(0, 1)` drawn once per data set, noise standard deviation 0.1 (reading the
paper's N(0, 0.01) as a variance), 12,000 rows. With `p = 1` the two tasks
share their weights and differ only by the noise, as in the paper.

The models (section 5.1): input dimension 100; MMoE and OMoE have 8 experts,
each a single ReLU layer of 16 units, and linear softmax gates with no bias
(`softmax(W_k x)`); every tower is a single ReLU layer of 8 units; the
shared-bottom trunk is one ReLU layer of 113 units, the paper's
13056 / (100 + 8 x 2), so the three models have about the same number of
parameters (printed). OMoE is the paper's one-gate model: a
`keras_mtl.layers.MMoE` with a single gate wrapped as a trunk whose one
output feeds both towers.

The protocol: for each seed and each `p` we draw one data set (the seed fixes
`u1, u2, alpha, beta` and the inputs, so the data sets of one seed differ
only by `p`) and train each model from its own seeded initialization with
Adam, joint loss `mse(y1) + mse(y2)`; we report the final test MSE averaged
over the two tasks, its mean and standard deviation over the seeds, the same
for the normalized test MSE (each task's MSE over its test-label variance,
1 - R^2: the label variance differs a lot between seeds, through `alpha` and
`beta`, so the raw MSE's spread is mostly the data's) and the label Pearson
correlation of each `p` (the paper's figure 2).

SCALED DOWN to run on 2 CPU cores in about 10 minutes: the paper runs 200
independent runs per model and correlation, grid-searches the learning rate
over {1e-4, 1e-3, 1e-2} and trains for thousands of steps on larger data; we
default to 5 seeds, 2000 training and 2000 test rows, one learning rate
(1e-2, not searched) and 8 epochs of batch 64 (256 steps).

Run:  python examples/mmoe_synthetic.py [plot path]
(prints the table and writes mmoe_synthetic.png, test loss vs p per model
with one-standard-deviation error bars; the plot is skipped with a note when
matplotlib is absent.)
"""

import sys
import time

import keras
import numpy as np

import keras_mtl

# The paper's dimension and keras-mmoe's constants for what the paper leaves out.
DIM = 100
SCALE = 0.3  # c
NUM_SINES = 5  # m
NOISE_STD = 0.1

NUM_EXPERTS = 8
EXPERT_UNITS = 16
TOWER_UNITS = 8
SHARED_BOTTOM_UNITS = round(DIM * EXPERT_UNITS * NUM_EXPERTS / (DIM + TOWER_UNITS * 2))  # 113
TASKS = ("t1", "t2")
MODELS = ("shared-bottom", "OMoE", "MMoE")


def make_data(p, num_examples, dim=DIM, seed=0, c=SCALE, m=NUM_SINES, noise_std=NOISE_STD):
    """One synthetic two-task regression data set of Ma et al. (2018), section 3.2.

    The seed fixes everything: `u1, u2`, `alpha, beta`, the inputs and the
    noise; the same seed with another `p` gives the same draws, only the
    second task's weights change.

    Args:
        p: Float in [-1, 1], the cosine similarity of the tasks' weights.
        num_examples: Number of rows.
        dim: Input dimension `d`.
        seed: Int seed of the NumPy generator.
        c: Scale of the weight vectors.
        m: Number of sine terms.
        noise_std: Standard deviation of each label's Gaussian noise.

    Returns:
        `(x, {"t1": y1, "t2": y2}, (w1, w2))`: `x` float32 of shape
        `(num_examples, dim)`, each `y` float32 of shape `(num_examples, 1)`,
        the weights float64 of shape `(dim,)`.
    """
    if not -1.0 <= p <= 1.0:
        raise ValueError(f"`p` must be in [-1, 1]. Received: {p!r}.")
    rng = np.random.default_rng(seed)
    # Two orthogonal unit vectors: Gram-Schmidt on two Gaussian vectors.
    u1 = rng.normal(size=dim)
    u1 /= np.linalg.norm(u1)
    u2 = rng.normal(size=dim)
    u2 -= u2.dot(u1) * u1
    u2 /= np.linalg.norm(u2)
    w1 = c * u1
    w2 = c * (p * u1 + np.sqrt(1.0 - p**2) * u2)
    alpha = rng.normal(size=m)
    beta = rng.normal(size=m)
    x = rng.normal(size=(num_examples, dim))
    noise = rng.normal(scale=noise_std, size=(2, num_examples))
    ys = {}
    for k, (task, w) in enumerate(zip(TASKS, (w1, w2))):
        wx = x @ w
        sines = np.sin(alpha[None, :] * wx[:, None] + beta[None, :]).sum(axis=1)
        ys[task] = (wx + sines + noise[k]).astype("float32")[:, None]
    return x.astype("float32"), ys, (w1, w2)


def make_omoe():
    """One-gate MoE trunk: 8 experts mixed by a single gate that both towers share."""
    inputs = keras.Input((DIM,))
    mixed = keras_mtl.layers.MMoE(NUM_EXPERTS, [EXPERT_UNITS], task_names=["shared"])(inputs)
    return keras.Model(inputs, mixed["shared"], name="omoe")


def make_model(name):
    """The named model: its trunk and one tower of 8 ReLU units per task."""
    trunks = {
        "shared-bottom": lambda: [SHARED_BOTTOM_UNITS],
        "OMoE": make_omoe,
        "MMoE": lambda: keras_mtl.layers.MMoE(NUM_EXPERTS, [EXPERT_UNITS]),
    }
    heads = {t: keras_mtl.Head(1, hidden_units=[TOWER_UNITS]) for t in TASKS}
    return keras_mtl.MultiTaskModel(trunks[name](), heads)


def train_and_test(name, data, seed, epochs, batch_size, learning_rate):
    """Trains model `name` on `data = (x_train, y_train, x_test, y_test)`.

    Returns:
        `(test MSE, normalized test MSE, parameter count)`, both losses
        averaged over the tasks; the normalized one divides each task's MSE
        by the variance of its test labels (1 - R^2), so seeds whose labels
        happen to vary more do not dominate the mean.
    """
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = make_model(name)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss={t: "mse" for t in TASKS}, mode="joint"
    )
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    scores = model.evaluate(x_test, y_test, batch_size=1024, verbose=0, return_dict=True)
    mse = [scores[f"{t}_loss"] for t in TASKS]
    normalized = [m / float(np.var(y_test[t])) for m, t in zip(mse, TASKS)]
    return float(np.mean(mse)), float(np.mean(normalized)), model.count_params()


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def format_table(results, p_values, correlations, normalized=None):
    """Markdown table: one row per (p, model), the test loss over seeds (mean,
    std, min, max) and, given `normalized`, the normalized loss (mean, std)."""
    extra = " norm. MSE mean | norm. std |" if normalized is not None else ""
    lines = [
        "| p | label corr. | model | test MSE mean | std | min | max |" + extra + " seeds |",
        "|---|---|---|---|---|---|---|" + ("---|---|" if extra else "") + "---|",
    ]
    for p in p_values:
        for name in MODELS:
            losses = np.asarray(results[(p, name)])
            row = (
                f"| {p:g} | {correlations[p]:.3f} | {name} | {losses.mean():.4f} | "
                f"{_std(losses):.4f} | {losses.min():.4f} | {losses.max():.4f} |"
            )
            if normalized is not None:
                norm = np.asarray(normalized[(p, name)])
                row += f" {norm.mean():.4f} | {_std(norm):.4f} |"
            lines.append(row + f" {len(losses)} |")
    return "\n".join(lines)


def save_plot(results, normalized, p_values, path):
    """Test loss and normalized test loss vs p per model, error bars one
    standard deviation over the seeds; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {path} (pip install 'keras_mtl[plot]').")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, values, label in (
        (axes[0], results, "final test MSE (mean of the 2 tasks)"),
        (axes[1], normalized, "test MSE / label variance (1 - R^2)"),
    ):
        for k, name in enumerate(MODELS):
            losses = [np.asarray(values[(p, name)]) for p in p_values]
            ax.errorbar(
                np.asarray(p_values) + (k - 1) * 0.008,
                [v.mean() for v in losses],
                yerr=[_std(v) for v in losses],
                marker="o",
                capsize=3,
                label=name,
            )
        ax.set_xlabel("task correlation p = cos(w1, w2)")
        ax.set_ylabel(label)
        ax.invert_xaxis()
        ax.legend()
    fig.suptitle("Synthetic tasks of Ma et al. (2018): mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"Saved the plot to {path}")
    return True


def main(
    p_values=(1.0, 0.9, 0.8, 0.5),
    seeds=(0, 1, 2, 3, 4),
    num_train=2000,
    num_test=2000,
    epochs=8,
    batch_size=64,
    learning_rate=1e-2,
    plot_path="mmoe_synthetic.png",
):
    """Runs every (p, seed, model), prints the parameter counts and the table,
    saves the plot (`plot_path`; None skips it).

    Returns:
        Dict with `losses` (`{(p, model): [test MSE per seed]}`),
        `normalized` (the same, each task's MSE over its label variance), `params`
        (`{model: count}`), `correlations` (`{p: label Pearson correlation,
        averaged over seeds}`) and the printed `table`.
    """
    start = time.time()
    results = {(p, name): [] for p in p_values for name in MODELS}
    normalized = {(p, name): [] for p in p_values for name in MODELS}
    params, corr = {}, {p: [] for p in p_values}
    for seed in seeds:
        for p in p_values:
            x, y, _ = make_data(p, num_train + num_test, seed=seed)
            corr[p].append(np.corrcoef(y["t1"][:, 0], y["t2"][:, 0])[0, 1])
            data = (
                x[:num_train],
                {t: v[:num_train] for t, v in y.items()},
                x[num_train:],
                {t: v[num_train:] for t, v in y.items()},
            )
            for name in MODELS:
                loss, norm, params[name] = train_and_test(
                    name, data, seed, epochs, batch_size, learning_rate
                )
                results[(p, name)].append(loss)
                normalized[(p, name)].append(norm)
        print(f"seed {seed} done ({time.time() - start:.0f} s)", flush=True)
    correlations = {p: float(np.mean(v)) for p, v in corr.items()}
    steps = epochs * -(-num_train // batch_size)
    print("\nParameters: " + ", ".join(f"{n} {params[n]}" for n in MODELS))
    print(
        f"\n{len(seeds)} seeds, {num_train} training / {num_test} test rows, d={DIM}, "
        f"Adam lr={learning_rate:g}, {epochs} epochs of batch {batch_size} ({steps} steps):\n"
    )
    table = format_table(results, p_values, correlations, normalized)
    print(table)
    print(f"\nTotal time: {time.time() - start:.0f} s")
    if plot_path is not None:
        save_plot(results, normalized, p_values, plot_path)
    return {
        "losses": results,
        "normalized": normalized,
        "params": params,
        "correlations": correlations,
        "table": table,
    }


if __name__ == "__main__":
    main(plot_path=sys.argv[1] if len(sys.argv) > 1 else "mmoe_synthetic.png")
