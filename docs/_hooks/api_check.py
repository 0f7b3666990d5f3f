"""MkDocs hook: the API reference documents every public name of keras_mtl.

The build fails (whether or not `--strict` is given) when a public name has
no docstring or does not appear in the rendered API reference. Public names
are those of `keras_mtl.__all__`, and for each public submodule listed there
its `__all__` (or, without one, the classes and functions it defines). For a
public class, the public methods it (or a private keras_mtl base) defines
count too, except undocumented overrides of a method that a base (Keras, or
a public keras_mtl class) documents. mkdocstrings renders only names with a docstring
(`show_if_no_docstring: false`), so "rendered" implies "documented".

tests/test_docs.py checks the same docstrings more closely (Args, Returns and
a doctest for each); this hook makes the docs build itself fail.
"""

import inspect
import os
import re
import sys

from mkdocs.exceptions import PluginError

_rendered_ids = set()


def _public_names():
    import keras_mtl

    found = {}
    for name in keras_mtl.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(keras_mtl, name)
        if not inspect.ismodule(obj):
            found[f"keras_mtl.{name}"] = obj
            continue
        members = getattr(obj, "__all__", None)
        if members is None:
            members = [
                n
                for n, v in vars(obj).items()
                if not n.startswith("_")
                and (inspect.isclass(v) or inspect.isfunction(v))
                and getattr(v, "__module__", "") == obj.__name__
            ]
        for member in members:
            found[f"{obj.__name__}.{member}"] = getattr(obj, member)
    for qualname, obj in list(found.items()):
        if inspect.isclass(obj):
            found.update(_public_methods(qualname, obj))
    return found


def _public_methods(qualname, cls):
    # A class documents the methods it defines and those of its private
    # keras_mtl bases; a public base documents its own methods itself.
    owners = [cls] + [
        c for c in cls.__mro__[1:] if c.__module__.startswith("keras_mtl") and c.__name__[0] == "_"
    ]
    methods = {}
    for owner in reversed(owners):
        bases = cls.__mro__[cls.__mro__.index(owner) + 1 :]
        for name, member in vars(owner).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            overrides = any(name in vars(base) for base in bases if base not in owners)
            if overrides and not (member.__doc__ or "").strip():
                continue  # documented where it is first defined (a base, or Keras)
            methods[f"{qualname}.{name}"] = member
    return methods


def on_config(config):
    _rendered_ids.clear()
    root = os.path.dirname(os.path.abspath(config.config_file_path))
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_page_content(html, page, **kwargs):
    if page.file.src_uri.startswith("api/"):
        _rendered_ids.update(re.findall(r'id="(keras_mtl[\w.]*)"', html))
    return html


def on_post_build(config, **kwargs):
    problems = []
    for qualname, obj in sorted(_public_names().items()):
        if not (getattr(obj, "__doc__", None) or "").strip():
            problems.append(f"{qualname} has no docstring")
        elif qualname not in _rendered_ids:
            problems.append(f"{qualname} is not in the API reference (docs/api/*.md)")
    if problems:
        raise PluginError("API reference incomplete:\n  " + "\n  ".join(problems))
