"""Two token datasets, one embedding trunk: alternating training with interleave.

The tutorial's English->French / English->German case, on synthetic token
sequences (no download): two tasks come from two DIFFERENT datasets of
different sizes that share one input space, sequences of 12 token ids from a
64-word vocabulary, padded with 0.

Each sentence is written about one of 4 topics: most words are filler shared
by all topics, and each word is, with some probability, one of the 10 words
of the sentence's topic. The two tasks label different sentences:

* fr: which of the 4 topics (4-class softmax), on 2,400 training sentences;
* de: science (topics 0, 1) or arts (topics 2, 3) (1 sigmoid unit), on only
  480 shorter, sparser sentences.

The trunk is a functional `keras.Model` with one named input, `tokens`: an
`Embedding` (token 0 is padding, masked) averaged over the sentence. So `x` is
a dict `{"tokens": ids}` everywhere, as in a real text pipeline.

`keras_mtl.data.interleave` feeds one dataset per task, and each step of
`mode="alternating"` trains the trunk and the head of that batch's task.
With `sampler="proportional"` a task's batches are drawn in proportion to
its dataset's number of batches, so an epoch of `steps_per_epoch` = the
total number of batches visits each dataset about once: fr gets about 5
updates for each of de's. The table compares each task's share of the
updates with its share of the batches, and shows its held-out accuracy.

Run:  pip install -e ".[cpu]"
      python examples/translation_tasks.py [--epochs 5]
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import keras_mtl

LENGTH = 12  # tokens per sentence, padded with 0
TOPICS = 4
TOPIC_WORDS = 10  # topic t's words are ids 1 + 10 t ... 10 + 10 t
VOCAB = 64  # 0 is padding, 1..40 topic words, 41..63 filler
EMBEDDING_DIM = 16
BATCH_SIZE = 32
LEARNING_RATE = 1e-2

TASKS = ("fr", "de")
# (train sentences, test sentences, shortest, longest, probability of a topic word)
DATASETS = {"fr": (2400, 1000, 6, 12, 0.3), "de": (480, 1000, 4, 10, 0.25)}
CHANCE = {"fr": 1 / TOPICS, "de": 0.5}


def sentences(rng, n, min_length, max_length, topic_rate):
    """`n` padded sentences of token ids and the topic of each.

    Returns:
        `(ids, topics)`: int32 arrays of shape `(n, LENGTH)` and `(n,)`.
    """
    topics = rng.integers(0, TOPICS, n)
    topic_words = 1 + TOPIC_WORDS * topics[:, None] + rng.integers(0, TOPIC_WORDS, (n, LENGTH))
    filler = rng.integers(1 + TOPICS * TOPIC_WORDS, VOCAB, (n, LENGTH))
    ids = np.where(rng.random((n, LENGTH)) < topic_rate, topic_words, filler)
    lengths = rng.integers(min_length, max_length + 1, n)
    ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0  # padding
    return ids.astype("int32"), topics.astype("int32")


def labels(task, topics):
    """The task's labels of sentences about `topics`."""
    if task == "fr":
        return topics
    return (topics >= 2).astype("float32")[:, None]  # arts vs science


def make_data(seed=0):
    """`{task: ((x_train, y_train), (x_test, y_test))}`, x a dict `{"tokens": ids}`."""
    rng = np.random.default_rng(seed)
    data = {}
    for task in TASKS:
        n_train, n_test, *shape = DATASETS[task]
        splits = []
        for n in (n_train, n_test):
            ids, topics = sentences(rng, n, *shape)
            splits.append(({"tokens": ids}, labels(task, topics)))
        data[task] = tuple(splits)
    return data


def make_trunk():
    """A fresh trunk: `{"tokens": (batch, 12) int32}` -> `(batch, 16)`."""
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(VOCAB, EMBEDDING_DIM, mask_zero=True)(tokens)
    sentence = keras.layers.GlobalAveragePooling1D()(embedded)  # over the unmasked tokens
    return keras.Model({"tokens": tokens}, sentence, name="bag_of_embeddings")


def as_dataset(x, y, seed=0):
    """A shuffled, batched dataset of `(x, y)`."""
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed).batch(BATCH_SIZE)


def train(data, epochs=5, verbose=2, seed=0):
    """Trains one alternating model on the interleaved datasets.

    Returns:
        `(model, history, batches)`, `batches[task]` the number of batches of
        the task's training set.
    """
    keras.utils.set_random_seed(seed)
    train_sets = {t: as_dataset(*train_split, seed=seed) for t, (train_split, _) in data.items()}
    batches = {t: int(ds.cardinality()) for t, ds in train_sets.items()}
    mixed = keras_mtl.data.interleave(train_sets, sampler="proportional", seed=seed)

    model = keras_mtl.MultiTaskModel(
        make_trunk(),
        {
            "fr": keras_mtl.Head(TOPICS, activation="softmax"),
            "de": keras_mtl.Head(1, activation="sigmoid"),
        },
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={"fr": "sparse_categorical_crossentropy", "de": "binary_crossentropy"},
        metrics={"fr": ["accuracy"], "de": ["accuracy"]},
        mode="alternating",
        seed=seed,
    )
    # One epoch = one pass's worth of batches over both datasets.
    steps = sum(batches.values())
    history = model.fit(mixed, steps_per_epoch=steps, epochs=epochs, verbose=verbose)
    return model, history, batches


def evaluate_on_test(model, data):
    """`{task: accuracy}` on each task's own held-out sentences."""
    scores = {}
    for task, (_, (x_test, y_test)) in data.items():
        # The other task has no labels for these sentences.
        y = {t: (y_test if t == task else None) for t in data}
        logs = model.evaluate(x_test, y, return_dict=True, verbose=0)
        scores[task] = float(logs[f"{task}_accuracy"])
    return scores


def format_table(rows):
    """A Markdown table, one row per task."""
    lines = [
        "| task | train sentences | batches | share of batches | updates | share of updates "
        "| test accuracy | chance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task, r in rows.items():
        lines.append(
            f"| {task} | {r['sentences']} | {r['batches']} | {r['batch_share']:.3f} "
            f"| {r['updates']} | {r['update_share']:.3f} | {r['accuracy']:.3f} "
            f"| {r['chance']:.2f} |"
        )
    return "\n".join(lines)


def main(epochs=5, verbose=2):
    """Trains the model and prints, per task, its updates and test accuracy.

    Returns:
        `{task: row}`: each row's `sentences`, `batches`, `batch_share`,
        `updates` (over all epochs), `update_share`, `accuracy`, `chance`.
    """
    data = make_data()
    model, history, batches = train(data, epochs, verbose)
    accuracy = evaluate_on_test(model, data)
    updates = {t: int(sum(history.history[f"{t}_updates"])) for t in TASKS}
    rows = {
        t: {
            "sentences": len(data[t][0][1]),
            "batches": batches[t],
            "batch_share": batches[t] / sum(batches.values()),
            "updates": updates[t],
            "update_share": updates[t] / sum(updates.values()),
            "accuracy": accuracy[t],
            "chance": CHANCE[t],
        }
        for t in TASKS
    }
    steps = sum(batches.values())
    print(
        f"\n{epochs} epochs of {steps} alternating steps, sampler='proportional'; "
        f"test accuracy on {DATASETS['fr'][1]} held-out sentences per task:\n"
    )
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Two token datasets, alternating training.")
    parser.add_argument("--epochs", type=int, default=5)
    main(parser.parse_args().epochs)
