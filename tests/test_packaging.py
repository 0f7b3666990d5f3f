"""Packaging: one version everywhere, and a wheel that holds every package.

`.ci/run` builds the real sdist and wheel and installs the wheel; these tests
check, without building, the facts that build relies on.
"""

import ast
import configparser
import importlib.metadata
import os

import packaging.version
import setuptools

import keras_mtl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_cfg():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"), encoding="utf-8")
    return config


def test_installed_version_is_the_package_version():
    # The distribution's metadata (what pip shows) comes from keras_mtl.__version__.
    # An editable install records the version when it is installed: after a bump,
    # reinstall (`pip install -e .`).
    assert keras_mtl.__version__ == importlib.metadata.version("keras_mtl")


def test_version_is_a_literal_setuptools_reads_without_importing_keras_mtl():
    # setup.cfg's `version = attr: keras_mtl.__version__` is resolved from the
    # module's source when `__version__` is assigned a string literal; anything
    # else makes setuptools import keras_mtl, and so TensorFlow, at build time.
    assert _setup_cfg()["metadata"]["version"].strip() == "attr: keras_mtl.__version__"
    path = os.path.join(ROOT, "keras_mtl", "__init__.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    literals = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    ]
    assert literals == [keras_mtl.__version__]


def test_version_follows_pep_440():
    version = packaging.version.Version(keras_mtl.__version__)
    assert str(version) == keras_mtl.__version__


def test_changelog_has_a_section_for_the_current_version():
    with open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8") as f:
        headings = [line.strip() for line in f if line.startswith("## ")]
    assert "## [Unreleased]" in headings
    assert any(h.startswith(f"## [{keras_mtl.__version__}] - ") for h in headings), headings


def test_every_folder_of_modules_is_a_package_the_wheel_includes():
    # A folder of modules without __init__.py is not found by `packages = find:`
    # and would silently be left out of the wheel.
    include = _setup_cfg()["options.packages.find"]["include"].split()
    found = set(setuptools.find_packages(where=ROOT, include=include))
    folders = set()
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "keras_mtl")):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        if any(name.endswith(".py") for name in filenames):
            folders.add(os.path.relpath(dirpath, ROOT).replace(os.sep, "."))
    assert "keras_mtl.layers" in folders
    assert found == folders
