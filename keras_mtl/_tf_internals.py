"""The one private TensorFlow name keras_mtl relies on, in one place.

TensorFlow is pinned to 2.21.x in setup.cfg; if an upgrade moves it, this
is the only file to change, and `switch_case` falls back to the public
`tf.switch_case` (correct, only slower on tiny models).

* `control_flow_switch_case._indexed_case_helper(...,
  lower_using_switch_merge=False)`: `tf.switch_case` builds a `Case` op
  that the runtime "lowers" into Switch/Merge nodes inlined in the caller's
  graph. Every node of every branch not taken is then still visited by the
  executor (as a dead tensor) on every step. With one branch per task and
  a small model that costs more than the branch taken saves: on the
  benchmarks' seed model, an alternating step with the lowered `Case` ran at
  0.88-0.93x a joint step, with the `Case` kept as a function call (only
  the taken branch runs) at 0.97-1.03x (2-core AMD EPYC, TF 2.21).
"""

import tensorflow as tf

try:
    from tensorflow.python.ops import control_flow_switch_case as _switch_case
except ImportError:  # pragma: no cover - a future TensorFlow
    _switch_case = None


def switch_case(branch_index, branch_fns):
    """`tf.switch_case(branch_index, branch_fns)` whose `Case` op is not
    lowered to Switch/Merge: only the taken branch is executed.

    Use it on one device only: under a `tf.distribute` strategy keep
    `tf.switch_case` (lowering lets a branch place ops on several devices).
    """
    helper = getattr(_switch_case, "_indexed_case_helper", None)
    if helper is None:  # pragma: no cover - a future TensorFlow
        return tf.switch_case(branch_index, branch_fns)
    return helper(branch_fns, None, branch_index, "switch_case", lower_using_switch_merge=False)
