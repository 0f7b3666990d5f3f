"""The documentation runs: README and docs/ code blocks, and a docstring for every public name.

Every ```python block of README.md and of each docs/*.md page runs, the blocks
of one page in order and in one namespace, in an empty folder, outside the
pytest process: the README in its own Python, the docs pages in one Python
they share (a fresh namespace and folder per page, one TensorFlow import). A block preceded by a `<!-- skip-test -->` line is not run (keep them
rare: a multi-machine snippet), and a block made only of `--8<--` snippet
includes (an example's source on the docs site) is checked to name an existing
file; the examples themselves run in tests/test_examples*.py.
"""

import glob
import inspect
import json
import os
import re
import select
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
            if getattr(obj, "__module__", "") == module.__name__ or name in getattr(
                module, "__all__", ()
            ):
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


_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", flags=re.S | re.M)
_SKIP = "<!-- skip-test -->"
_SNIPPET = "--8<--"
_INCLUDE = re.compile(r'^--8<-- "([^"]+)"$')


def _blocks(path):
    """`(runnable, skipped, included)`: the page's python blocks, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    runnable, skipped, included = [], [], []
    for match in _FENCE.finditer(text):
        code = match.group(1)
        lines = [line.strip() for line in code.splitlines() if line.strip()]
        before = text[: match.start()].rstrip().splitlines()
        if len(lines) > 2 and lines[0] == lines[-1] == _SNIPPET:
            included += lines[1:-1]  # a block include: --8<--, file names, --8<--
        elif lines and all(_INCLUDE.match(line) for line in lines):
            included += [_INCLUDE.match(line).group(1) for line in lines]
        elif before and before[-1].strip() == _SKIP:
            skipped.append(code)
        else:
            runnable.append(code)
    return runnable, skipped, included


def _readme_python_blocks():
    return _blocks(os.path.join(ROOT, "README.md"))[0]


DOC_PAGES = sorted(
    os.path.relpath(path, ROOT).replace(os.sep, "/")
    for path in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)
RUNNABLE_PAGES = [page for page in DOC_PAGES if _blocks(os.path.join(ROOT, page))[0]]


def _run_blocks(blocks, label, cwd):
    """Runs `blocks` in order in one namespace in a fresh Python; fails on the first error."""
    runner = textwrap.dedent(
        """
        import os, sys, traceback
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        blocks = {blocks!r}
        namespace = {{"__name__": "__docs__"}}
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"{label} block {{i + 1}}", "exec"), namespace)
            except Exception:
                print(f"{label} python block {{i + 1}} failed:\\n{{code}}", file=sys.stderr)
                traceback.print_exc()
                sys.exit(1)
        print(f"ran {{len(blocks)}} blocks")
        """
    ).format(blocks=blocks, label=label)
    done = subprocess.run(
        [sys.executable, "-c", runner], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"ran {len(blocks)} blocks" in done.stdout


def test_readme_has_python_examples():
    assert len(_readme_python_blocks()) >= 3


@pytest.mark.slow
def test_every_readme_python_block_runs(tmp_path):
    _run_blocks(_readme_python_blocks(), "README", tmp_path)


def test_docs_pages_have_python_examples():
    assert len(RUNNABLE_PAGES) >= 10, RUNNABLE_PAGES


def test_docs_blocks_compile_and_includes_exist():
    # One test for all pages: each test pays the conftest's Keras reset.
    for page in DOC_PAGES:
        runnable, skipped, included = _blocks(os.path.join(ROOT, page))
        for i, code in enumerate(runnable + skipped):
            compile(code, f"{page} block {i + 1}", "exec")
        for path in included:
            assert os.path.isfile(os.path.join(ROOT, path)), f"{page} includes missing {path}"


def test_skipped_docs_blocks_are_rare():
    skipped = {
        page: len(_blocks(os.path.join(ROOT, page))[1]) for page in DOC_PAGES + ["README.md"]
    }
    assert sum(skipped.values()) <= 2, {page: n for page, n in skipped.items() if n}


# One Python process runs every docs page, each in a fresh namespace and its own
# empty folder: importing TensorFlow once instead of once per page saves most
# of these tests' time. A page that kills the process gets a new one for the next.
_WORKER = textwrap.dedent(
    """
    import json, os, sys, traceback
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the blocks print goes to stderr, not into the results
    sys.stdout = sys.stderr
    import keras_mtl  # noqa: F401  (the import the pages share)
    for line in sys.stdin:
        job = json.loads(line)
        os.chdir(job["cwd"])
        namespace = {"__name__": "__docs__"}
        error = None
        for i, code in enumerate(job["blocks"]):
            try:
                exec(compile(code, f"{job['label']} block {i + 1}", "exec"), namespace)
            except BaseException:
                error = f"python block {i + 1} failed:\\n{code}\\n" + traceback.format_exc()
                break
        results.write(json.dumps({"error": error, "ran": i + 1}) + "\\n")
        results.flush()
    """
)


class _DocsWorker:
    def __init__(self, log_dir):
        self.log_dir = log_dir
        self.process = None

    def run(self, label, blocks, cwd, timeout=600):
        if self.process is None or self.process.poll() is not None:
            self.log = open(os.path.join(self.log_dir, "docs_worker.log"), "a", encoding="utf-8")
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                text=True,
            )
        job = {"label": label, "blocks": blocks, "cwd": str(cwd)}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            pytest.fail(f"{label}: the docs worker died or timed out (log: {self.log.name})")
        return json.loads(line)

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.log.close()
            self.process = None


@pytest.fixture(scope="module")
def docs_worker(tmp_path_factory):
    worker = _DocsWorker(tmp_path_factory.mktemp("docs_worker"))
    yield worker
    worker.close()


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_every_docs_python_block_runs(page, docs_worker, tmp_path):
    blocks = _blocks(os.path.join(ROOT, page))[0]
    result = docs_worker.run(page, blocks, tmp_path)
    assert result["error"] is None, f"{page} {result['error'][-4000:]}"
    assert result["ran"] == len(blocks)
