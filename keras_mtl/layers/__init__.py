"""Expert-mixture trunks: MMoE, CGC and PLE, each returning `{task: features}`.

Each layer takes one feature tensor `(batch, d)` and returns one
representation per task, `{task_name: (batch, expert_units[-1])}`, mixed
from a pool of small expert networks by per-task softmax gates. Use one as
the whole trunk of a `MultiTaskModel` (which then sets `task_names` from its
heads) or in a functional model with `task_names=[...]`.

Every task's gates and task-specific experts are their own variables, so a
task's output depends only on the shared experts, its own experts and gates
(and, in `PLE`, the shared gates of earlier levels and what feeds them):
the other tasks' gradients never reach them.
"""

from keras_mtl.layers.mmoe import MMoE
from keras_mtl.layers.ple import CGC, PLE

__all__ = ["MMoE", "CGC", "PLE"]
