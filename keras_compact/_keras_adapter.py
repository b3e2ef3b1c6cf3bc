"""The one place where keras-compact touches Keras internals.

Keras 3 has no public API for three things this library needs:

- reading a Functional model's call graph with its call arguments (which
  layer call read which tensor, with which keyword arguments, in topological
  order): `Model.get_config()` describes it, but by names, without the live
  layer objects, shared-call identity or raw `keras.ops` operations;
- a hook after an optimizer's own update and before its iteration counter
  moves, at the point where gradient accumulation has decided to update
  (`Optimizer.apply` runs variable constraints there, but one variable at a
  time, and a neuron's group spans several variables);
- subclassing an optimizer without losing its backend's fused update (on
  PyTorch only the exact Keras classes get Keras's `torch._foreach_*` step).

Everything else uses public Keras. Each function here is exercised by
tests/test_keras_adapter.py, so a Keras release that moves one of these
internals fails there first, with the name of the internal, and
`make test-next` runs the suite against keras-nightly to see it early.
"""

import keras


def functional_of(model):
    """The Functional graph behind a Sequential or Functional model, else None.

    A Sequential model that was never built on an input has none either.
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    return None


def operation_calls(functional):
    """Each call of an operation in `functional`, inputs before their users.

    Yields (operation, input KerasTensors, output KerasTensors, arguments),
    `arguments` being what `fill_in_arguments` takes. Input placeholders are
    skipped.
    """
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.is_input or node.operation is None:
                continue
            yield node.operation, list(node.input_tensors), list(node.outputs), node.arguments


def fill_in_arguments(arguments, tensors_by_id):
    """(args, kwargs) of a recorded call with each KerasTensor replaced.

    `tensors_by_id` maps id(original KerasTensor) to its replacement.
    """
    return arguments.fill_in(tensors_by_id)


def argument_values(arguments):
    """Every leaf value of a recorded call's arguments (tensors and constants)."""
    return keras.tree.flatten((arguments.args, arguments.kwargs))


def call_argument(arguments, position, name):
    """The argument of a recorded call given at `position` or as keyword `name` (None if neither)."""
    if position is not None and position < len(arguments.args):
        return arguments.args[position]
    return arguments.kwargs.get(name)


def has_implicit_mask(tensor):
    """Whether a symbolic tensor carries a Keras mask (from `Embedding(mask_zero=True)`, say)."""
    return getattr(tensor, "_keras_mask", None) is not None


def input_structure(functional):
    """The nested structure (list, dict, ...) the Functional model takes its inputs in."""
    return functional._inputs_struct


def output_structure(functional):
    """The nested structure the Functional model returns its outputs in."""
    return functional._outputs_struct


# keras.ops arithmetic recorded in a Functional graph (`x + 3.0`, `x * y`)
# is an instance of these classes of keras.src.ops.numpy. They are matched
# by module and name, so that importing keras_compact imports no keras.src.
_ELEMENTWISE_OP_MODULE = "keras.src.ops.numpy"
ELEMENTWISE_OP_NAMES = frozenset(
    {"Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum", "Minimum"}
)


def elementwise_op_name(operation):
    """'Add', 'Multiply', ... for a raw elementwise keras.ops operation, else None."""
    cls = type(operation)
    if cls.__module__ == _ELEMENTWISE_OP_MODULE and cls.__name__ in ELEMENTWISE_OP_NAMES:
        return cls.__name__
    return None


class PostUpdateHook:
    """Optimizer mixin: calls `self._after_update(learning_rate)` after each update.

    It runs inside Keras's `_backend_update_step`, which every backend calls
    once per real update: after gradient accumulation has decided to update,
    inside the compiled train step, before the iteration counter moves.
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        super()._backend_update_step(grads, trainable_variables, learning_rate)
        self._after_update(learning_rate)

    def _after_update(self, learning_rate):
        raise NotImplementedError


def backend_optimizer_class(optimizer_class):
    """Keras's own implementation of `optimizer_class` on the backend in use.

    On PyTorch, `keras.optimizers.SGD(...)` builds `torch_sgd.SGD`, which
    updates every variable at once with a few `torch._foreach_*` ops;
    `TorchOptimizer.__new__` maps the exact Keras classes only, so a subclass
    of `keras.optimizers.SGD` would update each variable with several eager
    `keras.ops` calls (on a GPU, most of ResNet50's step; BENCHMARKS.md).
    Subclassing the class returned here keeps Keras's fast update. Elsewhere,
    and for a class Keras has no such implementation of, `optimizer_class`.
    """
    if keras.backend.backend() != "torch":
        return optimizer_class
    from keras.src.backend.torch.optimizers import torch_adam, torch_sgd

    parallel = {keras.optimizers.SGD: torch_sgd.SGD, keras.optimizers.Adam: torch_adam.Adam}
    return parallel.get(optimizer_class, optimizer_class)


def cross_replica_call(optimizer, fn, *args):
    """Under tf.distribute, run `fn(strategy, *args)` in cross-replica context.

    That is where Keras's own TensorFlow optimizer updates variables
    (`strategy.extended.update`); outside a strategy, fn runs with the default
    strategy. TensorFlow backend only.
    """
    import tensorflow as tf

    return tf.__internal__.distribute.interim.maybe_merge_call(
        fn, optimizer._distribution_strategy, *args
    )


def assign_if(condition, assign):
    """Call `assign()`, which assigns variables, only where the scalar `condition` holds.

    On TensorFlow the assignments go inside a `tf.cond` branch, so a step where
    `condition` is false writes nothing (an assignment copies the whole
    variable, even of its own value); on torch, which Keras runs eagerly, it is
    a Python `if` on `condition` (a bool, or a tensor read back). JAX cannot
    assign inside a cond (it would leak a tracer): there the caller computes
    values in `keras.ops.cond` and assigns them after it.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        if bool(keras.ops.convert_to_numpy(condition)):
            assign()
        return
    if backend != "tensorflow":
        raise NotImplementedError(f"assign_if: no assignment inside a branch on the {backend} backend.")
    import tensorflow as tf

    def run():
        assign()
        return tf.constant(True)

    tf.cond(condition, run, lambda: tf.constant(False))
