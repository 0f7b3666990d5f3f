"""Crash-safe file writes for saving models and weights."""

import os


def write_atomically(filepath, suffix, write):
    """Calls `write(path)` so that `filepath` is replaced in one step.

    `write` writes a temporary file next to `filepath`, which then replaces
    `filepath` with `os.replace` (atomic on POSIX and Windows). A process
    killed while writing leaves the previous file intact and loadable, which
    Keras's own `save`/`save_weights` (writing in place) do not guarantee.
    Anything that is not a local path ending in `suffix` (file objects,
    remote URLs, sharded or unzipped formats) is passed to `write` as is.

    Args:
        filepath: The target, as given to `save`/`save_weights`.
        suffix: The file-name ending Keras requires, e.g. `".weights.h5"`;
            the temporary file keeps it.
        write: Callable taking the path to write.

    Returns:
        What `write` returns.
    """
    if not isinstance(filepath, (str, os.PathLike)):
        return write(filepath)
    path = os.fspath(filepath)
    if "://" in path or not path.endswith(suffix):
        return write(filepath)
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name[: -len(suffix)]}.tmp-{os.getpid()}{suffix}")
    try:
        result = write(temporary)
        os.replace(temporary, path)
        return result
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
