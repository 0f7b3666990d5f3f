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
paper's N(0, 0.01) as a variance, so no model can get a test MSE below about
0.01), and its split of 10,000 training, 1,000 validation and 1,000 test rows.
With `p = 1` the two tasks share their weights and differ only by the noise,
as in the paper.

The models (section 5.1): input dimension 100; MMoE and OMoE have 8 experts,
each a single ReLU layer of 16 units, and linear softmax gates with no bias
(`softmax(W_k x)`); every tower is a single ReLU layer of 8 units; the
shared-bottom trunk is one ReLU layer of 113 units, the paper's
13056 / (100 + 8 x 2), so the three models have about the same number of
parameters (printed). OMoE is the paper's one-gate model: a
`keras_mtl.layers.MMoE` with a single gate wrapped as a trunk whose one
output feeds both towers.

Training, to convergence on the validation rows: Adam on the joint loss
`mse(y1) + mse(y2)`, batches of 256, the learning rate halved whenever the
validation loss stops improving for an epoch (`ReduceLROnPlateau`), training
stopped once it has not improved for 4 epochs (`EarlyStopping`, at most 30
epochs) and the weights of the best validation epoch restored. Each model's
initial learning rate is chosen from {3e-3, 1e-2, 3e-2} (the paper searches
{1e-4, 1e-3, 1e-2}) by its validation loss on a tuning data set (seed 1000,
p = 0.5) that no evaluation seed uses; the test rows never choose anything.

The protocol: for each seed and each `p` we draw one data set (the seed fixes
`u1, u2, alpha, beta` and the inputs, so the data sets of one seed differ
only by `p`) and train each model from its own seeded initialization; we
report each task's test MSE, its mean and standard deviation over the seeds,
the epoch early stopping kept, and the label Pearson correlation of each `p`
(the paper's figure 2).

SCALED DOWN to run on 2 CPU cores: the paper runs 200 independent runs
per model and correlation; we default to 5 seeds and at most 30 epochs
(about 11 minutes of CPU time; 29 minutes wall on our shared, loaded cores,
see mmoe_synthetic_RESULTS.md).

Run:  python examples/mmoe_synthetic.py [plot path]
(prints the table and writes mmoe_synthetic.png: test MSE vs p per model
with one-standard-deviation error bars, and every run's test MSE; the plot is
skipped with a note when matplotlib is absent.)
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

LEARNING_RATES = (3e-3, 1e-2, 3e-2)  # Adam's initial learning rate, chosen on validation
TUNING_SEED = 1000  # the data set that chooses it; keep it out of the evaluation seeds
TUNING_P = 0.5


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


def split_data(p, seed, num_train, num_val, num_test):
    """One data set of `make_data`, split in order into training, validation and test rows.

    Args:
        p: Float in [-1, 1], the cosine similarity of the tasks' weights.
        seed: Int seed of `make_data`.
        num_train: Number of training rows.
        num_val: Number of validation rows.
        num_test: Number of test rows.

    Returns:
        `{"train": (x, y), "val": (x, y), "test": (x, y)}`, each `y` a dict
        `{"t1": labels, "t2": labels}` as in `make_data`.
    """
    x, y, _ = make_data(p, num_train + num_val + num_test, seed=seed)
    bounds = {"train": (0, num_train), "val": (num_train, num_train + num_val)}
    bounds["test"] = (num_train + num_val, num_train + num_val + num_test)
    return {k: (x[a:b], {t: v[a:b] for t, v in y.items()}) for k, (a, b) in bounds.items()}


class Trainer:
    """One compiled model of an architecture, re-initialized for every run.

    Every run starts from the weights of a freshly built, seeded model and
    from a zeroed Adam state, so it trains exactly like a new model; but
    the compiled training and evaluation functions are traced once per
    architecture, not once per run (tracing the MMoE's graph takes longer
    than training it for a few epochs on 2 cores).

    Args:
        name: One of `MODELS`.
        steps_per_execution: Training steps per call of the compiled
            function.

    Example:

    >>> trainer = Trainer("shared-bottom")
    >>> data = split_data(0.5, seed=0, num_train=64, num_val=32, num_test=32)
    >>> run = trainer.run(data, seed=0, learning_rate=1e-2, max_epochs=2,
    ...                   batch_size=32)
    >>> len(run["test_mse"]), run["epochs"]
    (2, 2)
    """

    def __init__(self, name, steps_per_execution=1):
        self.name = name
        self.model = make_model(name)
        self.optimizer = keras.optimizers.Adam()
        self.model.compile(
            optimizer=self.optimizer,
            loss={t: "mse" for t in TASKS},
            mode="joint",
            steps_per_execution=steps_per_execution,
            seed=0,  # with step_counter, it orders fit()'s shuffled batches
        )
        self.model(np.zeros((1, DIM), "float32"))
        self.num_params = self.model.count_params()

    def _reset(self, seed, learning_rate):
        keras.utils.set_random_seed(seed)
        fresh = make_model(self.name)
        fresh(np.zeros((1, DIM), "float32"))
        self.model.set_weights(fresh.get_weights())
        for variable in self.optimizer.variables:  # iterations, moments
            variable.assign(np.zeros(variable.shape, variable.dtype))
        self.optimizer.learning_rate.assign(learning_rate)
        # fit() shuffles the arrays in an order drawn from the compile seed
        # and step_counter: a new model's counter starts at 0.
        self.model.step_counter.assign(0)

    def run(self, data, seed, learning_rate, max_epochs, batch_size, patience=4):
        """Trains from the seeded initialization until the validation loss stops improving.

        Args:
            data: A `split_data` result.
            seed: Int seed of the initialization (fit()'s shuffled order
                follows the compile seed, the same for every run).
            learning_rate: Adam's initial learning rate, halved after every
                epoch without a validation improvement.
            max_epochs: Most epochs to train.
            batch_size: Rows per step.
            patience: Epochs without a validation improvement (of at least
                1e-4) before stopping.

        Returns:
            Dict: `test_mse` (per task, with the restored best weights),
            `val_loss` (the joint validation loss after each epoch),
            `best_epoch` (1-based, the weights kept), `epochs` (trained)
            and `final_lr`.
        """
        self._reset(seed, learning_rate)
        stopper = keras.callbacks.EarlyStopping(
            "val_loss", min_delta=1e-4, patience=patience, restore_best_weights=True
        )
        history = self.model.fit(
            *data["train"],
            validation_data=data["val"],
            epochs=max_epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=[
                keras.callbacks.ReduceLROnPlateau(
                    "val_loss", factor=0.5, patience=1, min_delta=1e-4, min_lr=1e-5
                ),
                stopper,
            ],
        )
        scores = self.model.evaluate(*data["test"], batch_size=1024, verbose=0, return_dict=True)
        return {
            "test_mse": [float(scores[f"{t}_loss"]) for t in TASKS],
            "val_loss": [float(v) for v in history.history["val_loss"]],
            "best_epoch": stopper.best_epoch + 1,
            "epochs": len(history.history["val_loss"]),
            "final_lr": float(self.optimizer.learning_rate.numpy()),
        }


def choose_learning_rates(trainers, data, learning_rates, **run_kwargs):
    """Each model's initial learning rate with the lowest best validation loss on `data`.

    Args:
        trainers: `{model name: Trainer}`.
        data: A `split_data` result (its test rows are not used).
        learning_rates: The candidates.
        **run_kwargs: `max_epochs`, `batch_size`, `patience` of `Trainer.run`.

    Returns:
        `(chosen, scores)`: `{model: learning rate}` and
        `{model: {learning rate: best validation loss}}`.
    """
    scores = {
        name: {
            lr: min(trainer.run(data, TUNING_SEED, lr, **run_kwargs)["val_loss"])
            for lr in learning_rates
        }
        for name, trainer in trainers.items()
    }
    return {name: min(s, key=s.get) for name, s in scores.items()}, scores


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_std(values):
    return f"{np.mean(values):.4f} ± {_std(values):.4f}"


def format_table(runs, p_values, correlations):
    """Markdown table: one row per (p, model); over the seeds, each task's test
    MSE and their mean (mean ± std), the min and max of that mean, the epoch
    early stopping kept (mean, min-max) and the epochs trained (mean)."""
    lines = [
        "| p | label corr. | model | t1 test MSE | t2 test MSE | mean of tasks | min | max "
        "| best epoch | epochs | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in p_values:
        for name in MODELS:
            rs = runs[(p, name)]
            per_task = np.asarray([r["test_mse"] for r in rs])
            both = per_task.mean(axis=1)
            best = [r["best_epoch"] for r in rs]
            lines.append(
                f"| {p:g} | {correlations[p]:.3f} | {name} | {_mean_std(per_task[:, 0])} | "
                f"{_mean_std(per_task[:, 1])} | {_mean_std(both)} | {both.min():.4f} | "
                f"{both.max():.4f} | {np.mean(best):.1f} ({min(best)}-{max(best)}) | "
                f"{np.mean([r['epochs'] for r in rs]):.1f} | {len(rs)} |"
            )
    return "\n".join(lines)


def save_plot(runs, p_values, path):
    """Left: test MSE (mean of the tasks) vs p per model, error bars one standard
    deviation over the seeds; right: every run's test MSE. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {path} (pip install 'keras_mtl[plot]').")
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, name in enumerate(MODELS):
        offset = (k - 1) * 0.01
        losses = [np.asarray([np.mean(r["test_mse"]) for r in runs[(p, name)]]) for p in p_values]
        axes[0].errorbar(
            np.asarray(p_values) + offset,
            [v.mean() for v in losses],
            yerr=[_std(v) for v in losses],
            marker="o",
            capsize=3,
            label=name,
        )
        for j, (p, v) in enumerate(zip(p_values, losses)):
            axes[1].scatter(
                np.full(len(v), p + offset * 1.5),
                v,
                s=14,
                color=f"C{k}",
                label=name if j == 0 else None,
            )
    axes[0].set_ylabel("test MSE (mean of the 2 tasks), mean ± std")
    axes[1].set_ylabel("test MSE of each run (log scale)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.axhline(NOISE_STD**2, color="gray", linestyle=":", label="noise floor")
        ax.set_xlabel("task correlation p = cos(w1, w2)")
        ax.invert_xaxis()
        ax.legend()
    fig.suptitle("Synthetic tasks of Ma et al. (2018), trained to early stopping")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"Saved the plot to {path}")
    return True


def main(
    p_values=(1.0, 0.9, 0.8, 0.5),
    seeds=(0, 1, 2, 3, 4),
    num_train=10000,
    num_val=1000,
    num_test=1000,
    batch_size=256,
    max_epochs=30,
    patience=4,
    learning_rates=LEARNING_RATES,
    plot_path="mmoe_synthetic.png",
):
    """Chooses each model's learning rate on the tuning data set, then runs
    every (p, seed, model); prints the parameter counts, the choice, the table
    and the times; saves the plot (`plot_path`; None skips it).

    Args:
        p_values: The task correlations.
        seeds: The evaluation seeds (`TUNING_SEED` must not be one).
        num_train, num_val, num_test: Rows of each split.
        batch_size: Rows per step.
        max_epochs: Most epochs per run.
        patience: Epochs without a validation improvement before stopping.
        learning_rates: Candidate initial learning rates; with one, no tuning.
        plot_path: Where to save the plot, or None.

    Returns:
        Dict with `runs` (`{(p, model): [Trainer.run result per seed]}`),
        `learning_rates` (`{model: chosen}`), `tuning` (the validation
        losses that chose them), `params` (`{model: count}`),
        `correlations` (`{p: label Pearson correlation, averaged over
        seeds}`) and the printed `table`.
    """
    if TUNING_SEED in seeds:
        raise ValueError(f"`seeds` must not contain TUNING_SEED={TUNING_SEED}. Got: {seeds!r}.")
    start, cpu_start = time.time(), time.process_time()
    steps = -(-num_train // batch_size)
    trainers = {name: Trainer(name, steps_per_execution=steps) for name in MODELS}
    params = {name: t.num_params for name, t in trainers.items()}
    print("Parameters: " + ", ".join(f"{n} {params[n]}" for n in MODELS), flush=True)
    fit_kwargs = dict(max_epochs=max_epochs, batch_size=batch_size, patience=patience)
    if len(learning_rates) > 1:
        tuning_data = split_data(TUNING_P, TUNING_SEED, num_train, num_val, num_test)
        chosen, tuning = choose_learning_rates(trainers, tuning_data, learning_rates, **fit_kwargs)
        for name in MODELS:
            losses = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in tuning[name].items())
            print(f"{name}: best validation loss per learning rate {{{losses}}}")
        print(f"Chosen ({time.time() - start:.0f} s): {chosen}", flush=True)
    else:
        chosen, tuning = {name: learning_rates[0] for name in MODELS}, {}
    runs = {(p, name): [] for p in p_values for name in MODELS}
    corr = {p: [] for p in p_values}
    for seed in seeds:
        for p in p_values:
            data = split_data(p, seed, num_train, num_val, num_test)
            y_all = [np.concatenate([data[s][1][t] for s in data])[:, 0] for t in TASKS]
            corr[p].append(np.corrcoef(*y_all)[0, 1])
            for name in MODELS:
                runs[(p, name)].append(trainers[name].run(data, seed, chosen[name], **fit_kwargs))
        print(f"seed {seed} done ({time.time() - start:.0f} s)", flush=True)
    correlations = {p: float(np.mean(v)) for p, v in corr.items()}
    print(
        f"\n{len(seeds)} seeds, {num_train} training / {num_val} validation / {num_test} test "
        f"rows, d={DIM}, batch {batch_size} ({steps} steps per epoch), at most {max_epochs} "
        f"epochs, patience {patience}, initial Adam learning rates {chosen}:\n"
    )
    table = format_table(runs, p_values, correlations)
    print(table)
    print(
        f"\nTotal time: {time.time() - start:.0f} s wall, "
        f"{time.process_time() - cpu_start:.0f} s CPU (this process, all threads)"
    )
    if plot_path is not None:
        save_plot(runs, p_values, plot_path)
    return {
        "runs": runs,
        "learning_rates": chosen,
        "tuning": tuning,
        "params": params,
        "correlations": correlations,
        "table": table,
    }


if __name__ == "__main__":
    main(plot_path=sys.argv[1] if len(sys.argv) > 1 else "mmoe_synthetic.png")
