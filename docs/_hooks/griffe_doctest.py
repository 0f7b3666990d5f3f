"""Griffe extension for keras_mtl's docstrings (used by the API reference).

* keras_mtl's docstrings write their examples as plain doctest lines after
  `Example:` (pytest runs them with `--doctest-modules`). Markdown would read a
  `>>>` line as a quote, so each run of doctest lines (prompts, continuations
  and the expected output up to the next blank line) is wrapped in a fenced
  `pycon` block.
* A module-level `Name.__doc__ = "..."` (how `keras_mtl.weighting.Context`,
  a namedtuple, gets its docstring) is invisible to static analysis; it is
  attached to `Name` here.
"""

import ast

import griffe


def fence_doctests(text):
    """Returns `text` with every doctest run wrapped in a ```pycon fence."""
    out, in_block, fence_indent = [], False, ""
    for line in text.splitlines():
        stripped = line.lstrip()
        if not in_block and stripped.startswith(">>>"):
            fence_indent = line[: len(line) - len(stripped)]
            out.append(f"{fence_indent}```pycon")
            in_block = True
        elif in_block and not stripped:
            out.append(f"{fence_indent}```")
            in_block = False
        out.append(line)
    if in_block:
        out.append(f"{fence_indent}```")
    return "\n".join(out)


class KerasMtlDocstrings(griffe.Extension):
    """Fences doctests and reads `Name.__doc__ = "..."` assignments."""

    def on_module_members(self, *, node, mod, **kwargs):
        if not isinstance(node, ast.Module):
            return
        for statement in node.body:
            if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
                continue
            target = statement.targets[0]
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "__doc__"
                and isinstance(target.value, ast.Name)
                and target.value.id in mod.members
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            ):
                member = mod.members[target.value.id]
                like = mod.docstring  # parse it as the module's own docstring
                member.docstring = griffe.Docstring(
                    fence_doctests(griffe.Docstring(statement.value.value).value),
                    lineno=statement.lineno,
                    parent=member,
                    parser=like.parser if like else None,
                    parser_options=like.parser_options if like else None,
                )

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
