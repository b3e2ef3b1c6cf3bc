"""Each Keras internal that keras_compact/_keras_adapter.py relies on, checked directly.

A Keras release that renames or changes one of them fails here first, with
the internal's name in the test's name (`make test-next` runs this against
keras-nightly).
"""

import pathlib

import keras
import numpy as np
import pytest

from keras_compact import _keras_adapter as adapter


def _functional():
    a = keras.Input((4,), name="a")
    b = keras.Input((4,), name="b")
    hidden = keras.layers.Dense(3, name="d")(a)
    total = keras.layers.Add(name="sum")([hidden, keras.layers.Dense(3, name="e")(b)])
    plus_one = total + 1.0  # a raw keras.ops operation in the graph
    return keras.Model({"a": a, "b": b}, [plus_one, hidden], name="f")


def test_functional_of_reads_sequential_functional_and_refuses_subclassed():
    sequential = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    assert isinstance(adapter.functional_of(sequential), keras.Model)
    assert adapter.functional_of(sequential) is not sequential  # Sequential._functional
    model = _functional()
    assert adapter.functional_of(model) is model  # Functional._nodes_by_depth

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert adapter.functional_of(Subclassed()) is None
    assert adapter.functional_of(keras.Sequential([keras.layers.Dense(1)])) is None  # unbuilt


def test_operation_calls_come_in_topological_order_with_their_tensors():
    model = _functional()
    calls = list(adapter.operation_calls(model))
    names = [getattr(op, "name", type(op).__name__) for op, *_ in calls]
    assert names.index("d") < names.index("sum") and names.index("e") < names.index("sum")
    produced = set()
    for operation, inputs, outputs, _ in calls:
        # Every input is a model input or was produced by an earlier call.
        assert all(id(t) in produced or t in model.inputs for t in inputs)
        produced.update(id(t) for t in outputs)
    assert set(id(t) for t in model.outputs) <= produced


def test_fill_in_arguments_replaces_tensors_and_keeps_constants():
    model = _functional()
    (operation, inputs, _, arguments), = [c for c in adapter.operation_calls(model) if adapter.elementwise_op_name(c[0])]
    replacement = keras.ops.ones((1, 3))
    args, kwargs = adapter.fill_in_arguments(arguments, {id(inputs[0]): replacement})
    np.testing.assert_allclose(keras.ops.convert_to_numpy(operation(*args, **kwargs)), 2.0)
    values = adapter.argument_values(arguments)
    assert any(isinstance(v, keras.KerasTensor) for v in values) and 1.0 in values


def test_input_and_output_structures():
    model = _functional()
    assert isinstance(adapter.input_structure(model), dict)
    assert set(adapter.input_structure(model)) == {"a", "b"}
    assert isinstance(adapter.output_structure(model), list) and len(adapter.output_structure(model)) == 2


def test_elementwise_op_names_are_found_by_module_and_class():
    model = _functional()
    ops = [op for op, *_ in adapter.operation_calls(model) if adapter.elementwise_op_name(op)]
    assert [adapter.elementwise_op_name(op) for op in ops] == ["Add"]
    assert adapter.elementwise_op_name(keras.layers.Add()) is None  # the layer, not the op
    import keras.src.ops.numpy as numpy_ops  # only this test imports keras.src

    for name in adapter.ELEMENTWISE_OP_NAMES:
        assert getattr(numpy_ops, name).__module__ == "keras.src.ops.numpy"


class _Counting(adapter.PostUpdateHook, keras.optimizers.SGD):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = []

    def _after_update(self, learning_rate):
        self.calls.append(float(learning_rate))


@pytest.mark.parametrize("accumulation", [None, 2])
def test_post_update_hook_runs_once_per_real_update(accumulation):
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = _Counting(learning_rate=0.5, gradient_accumulation_steps=accumulation)
    gradient = keras.ops.ones(3)
    for _ in range(4):
        optimizer.apply([gradient], [variable])
    assert optimizer.calls == [0.5] * (4 // (accumulation or 1))
    # The hook ran after Keras's own update: SGD moved the variable.
    assert float(keras.ops.convert_to_numpy(variable)[0]) < 1.0


def test_call_argument_reads_positional_and_keyword_arguments_and_masks_are_seen():
    query = keras.Input((4, 3))
    tokens = keras.Input((4,), dtype="int32")
    embedded = keras.layers.Embedding(10, 3, mask_zero=True)(tokens)
    attention = keras.layers.MultiHeadAttention(2, 2)
    model = keras.Model([query, tokens], attention(query, embedded, use_causal_mask=True))
    (_, inputs, _, arguments), = [c for c in adapter.operation_calls(model) if c[0] is attention]
    assert adapter.call_argument(arguments, 0, "query") is query
    assert adapter.call_argument(arguments, 1, "value") is embedded
    assert adapter.call_argument(arguments, None, "use_causal_mask") is True
    assert adapter.call_argument(arguments, 2, "key") is None
    assert [adapter.has_implicit_mask(t) for t in inputs] == [False, True]


def test_cross_replica_call_runs_under_the_default_strategy():
    optimizer = keras.optimizers.SGD()
    optimizer.build([keras.Variable(np.ones(2, "float32"))])  # _distribution_strategy
    seen = adapter.cross_replica_call(optimizer, lambda strategy, x: (strategy, x), 3)
    assert seen[1] == 3 and hasattr(seen[0], "extended")


def test_backend_optimizer_class_is_the_keras_class_off_torch():
    # On torch it is Keras's fused class: tests/test_backends.py (backend_case.py) checks that.
    assert adapter.backend_optimizer_class(keras.optimizers.SGD) is keras.optimizers.SGD
    assert adapter.backend_optimizer_class(keras.optimizers.RMSprop) is keras.optimizers.RMSprop


# The internals the adapter wraps: no other module of the package may name them.
_INTERNALS = (
    "keras.src",
    "_nodes_by_depth",
    "_inbound_nodes",
    "_functional",
    "_inputs_struct",
    "_outputs_struct",
    "_backend_update_step",
    "_distribution_strategy",
    "__internal__",
    "_flatten_layers",
    "_trainable_variables",
    "_get_variable_index",
    "_keras_mask",
)


def test_no_module_but_the_adapter_touches_keras_internals():
    package = pathlib.Path(adapter.__file__).parent
    offenders = {
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py")
        if path.name != "_keras_adapter.py"
        for name in _INTERNALS
        if name in path.read_text()
    }
    assert sorted(offenders) == []
