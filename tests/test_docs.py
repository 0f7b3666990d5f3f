"""The documentation runs: README code blocks, and a docstring for every public name."""

import inspect
import os
import re
import subprocess
import sys
import textwrap

import pytest

import keras_mtl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Keras protocol methods a subclass overrides; Keras documents them.
KERAS_PROTOCOL = {
    "build",
    "call",
    "get_config",
    "from_config",
    "compute_output_shape",
    "save_own_variables",
    "load_own_variables",
    "make_train_function",
    "test_step",
    "update_state",
    "result",
    "reset_state",
    "get_compile_config",
    "compile_from_config",
    "on_epoch_end",
    "on_train_batch_end",
    "set_model",
    "reset_metrics",
    "train_step",
    "make_test_function",
    "get_build_config",
    "build_from_config",
}
MODULES = [
    keras_mtl.samplers,
    keras_mtl.data,
    keras_mtl.layers,
    keras_mtl.optimizers,
    keras_mtl.weighting,
    keras_mtl.callbacks,
]


def _public_objects():
    seen = {}
    for name in keras_mtl.__all__:
        obj = getattr(keras_mtl, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            seen[f"keras_mtl.{name}"] = obj
    for module in MODULES:
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "") == module.__name__:
                seen[f"{module.__name__}.{name}"] = obj
    for qualname, obj in list(seen.items()):
        if inspect.isclass(obj):
            # Its own methods and those of keras_mtl's mixins it inherits.
            owners = [c for c in obj.__mro__ if c.__module__.startswith("keras_mtl")]
            for owner in reversed(owners):
                for name, member in vars(owner).items():
                    if (
                        name.startswith("_")
                        or name in KERAS_PROTOCOL
                        or not inspect.isfunction(member)
                    ):
                        continue
                    seen[f"{qualname}.{name}"] = member
    return seen


def _takes_arguments(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return False
    return any(p.name not in ("self", "cls") for p in params)


PUBLIC = _public_objects()


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_name_has_a_complete_docstring(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    is_method = name.count(".") > 2 or (name.count(".") == 2 and name.split(".")[1][0].isupper())
    if _takes_arguments(obj) and not (inspect.isclass(obj) and not _own_init(obj)):
        assert "Args:" in doc or "Attributes:" in doc, f"{name} documents no Args"
    if inspect.isfunction(obj):
        assert "Returns:" in doc, f"{name} documents no Returns"
    if not is_method or name.startswith("keras_mtl.MultiTaskModel."):
        assert ">>>" in doc, f"{name} has no runnable Example (doctest)"


def _own_init(cls):
    return "__init__" in vars(cls)


def _readme_python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_examples():
    assert len(_readme_python_blocks()) >= 5


@pytest.mark.slow
def test_every_readme_python_block_runs(tmp_path):
    blocks = _readme_python_blocks()
    runner = textwrap.dedent(
        """
        import os, sys, traceback
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        blocks = {blocks!r}
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"README block {{i + 1}}", "exec"), {{"__name__": "__readme__"}})
            except Exception:
                print(f"README python block {{i + 1}} failed:\\n{{code}}", file=sys.stderr)
                traceback.print_exc()
                sys.exit(1)
        print(f"ran {{len(blocks)}} blocks")
        """
    ).format(blocks=blocks)
    done = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"ran {len(blocks)} blocks" in done.stdout
