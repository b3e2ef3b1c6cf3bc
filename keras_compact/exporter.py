"""Export to SavedModel and TFLite (float32, float16, int8), each artefact verified.

Route: `model.export(dir, format="tf_saved_model")` (Keras's own SavedModel
export), then `tf.lite.TFLiteConverter.from_saved_model` restricted to the
TFLite builtin ops. Keras's `format="litert"` takes the same route but also
enables TF Select ops, so a model using an op TFLite lacks converts "fine" and
then fails to load in a plain LiteRT interpreter; restricted to builtins the
conversion itself fails and says which op. `from_concrete_functions` is never
used: on Keras 3 models it silently writes uninitialised weights.

Every artefact is written next to its destination under a temporary name
(`keras_compact.files`), run (SavedModel through TensorFlow, .tflite through
`ai_edge_litert`), compared with the Keras model, and only then moved into
place; `exporting` lets a caller move several verified artefacts together.
"""

import contextlib
import dataclasses
import math
import os
import tempfile

import keras
import numpy as np

from keras_compact.compaction.verify import computes_in_half_precision
from keras_compact.compaction.verify import random_batch
from keras_compact.compaction.verify import verification_tolerances
from keras_compact.graph import check_open_dim_size
from keras_compact.files import atomic_directory, atomic_path, check_writable, temporary_files_in
from keras_compact.numerics import relative_difference, within_tolerance

FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = (None, "float16", "int8")

# Calibration samples fed to the int8 converter; a few hundred is the usual
# advice, more only slows conversion.
NUM_CALIBRATION_SAMPLES = 200
# Samples compared against the Keras model when the caller gives none.
NUM_VERIFICATION_SAMPLES = 64


class ExportVerificationError(RuntimeError):
    """An exported artefact computes something other than the Keras model."""


class ExportConversionError(ValueError):
    """The TFLite converter cannot express the model with builtin ops."""


@dataclasses.dataclass
class ExportReport:
    """What was written and how closely it reproduces the Keras model.

    Attributes:
        format: `"saved_model"` or `"tflite"`.
        quantize: `None`, `"float16"` or `"int8"`.
        path: the artefact (a file for TFLite, a directory for SavedModel).
        size_bytes: its size on disk (all files, for a directory).
        num_samples: the inputs it was verified on.
        max_abs_diff: max |artefact - Keras| over all outputs.
        max_rel_diff: `numerics.relative_difference`, i.e. `max_abs_diff /
            max(1, max |Keras|)`: relative to the output's scale (the same
            definition as the compactor's), since element-wise ratios blow
            up on outputs near zero.
        class_agreement: fraction of samples whose arg-max class is the same
            as Keras's (`None` for outputs with a single unit).
        accuracy: the artefact's accuracy on the given labels, if any.
        keras_accuracy: the Keras model's accuracy on the same samples.
    """

    format: str
    quantize: str | None
    path: str
    size_bytes: int
    num_samples: int
    max_abs_diff: float
    max_rel_diff: float
    class_agreement: float | None = None
    accuracy: float | None = None
    keras_accuracy: float | None = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def summary(self):
        """One line for logs and the command line."""
        kind = self.format + (f" ({self.quantize})" if self.quantize else "")
        parts = [
            f"{kind} -> {self.path}: {self.size_bytes:,} bytes",
            f"max abs diff {self.max_abs_diff:.2e}",
            f"max rel diff {self.max_rel_diff:.2e}",
        ]
        if self.class_agreement is not None:
            parts.append(f"class agreement {self.class_agreement:.4f}")
        if self.accuracy is not None:
            parts.append(
                f"accuracy {self.accuracy:.4f} (Keras {self.keras_accuracy:.4f})"
            )
        return ", ".join(parts) + f" on {self.num_samples} samples"


def export(
    model,
    path,
    format="saved_model",
    quantize=None,
    representative_data=None,
    sample_data=None,
    labels=None,
    rtol=1e-4,
    open_dim_size=None,
):
    """Exports `model` to `path` and checks the artefact against the model.

    Args:
        model: a built Keras model with one input and one output.
        path: destination: a directory for `"saved_model"`, a file (by
            convention `*.tflite`) for `"tflite"`. Replaced atomically; on a
            failed verification nothing is written there. An existing folder
            that does not hold a SavedModel is refused (it would be replaced
            whole).
        format: `"saved_model"` or `"tflite"`.
        quantize: TFLite only. `None` (float32), `"float16"` (weights stored
            in float16) or `"int8"` (full-integer kernels, float32 input and
            output, activation ranges calibrated on `representative_data`).
        representative_data: inputs for int8 calibration (required for
            `"int8"`): an array of samples, or a `tf.data.Dataset` yielding
            inputs or `(inputs, labels)` batches. The first
            `NUM_CALIBRATION_SAMPLES` are used.
        sample_data: inputs to verify on (same forms). Defaults to the
            representative data, else to seeded random inputs
            (`compaction.verify.random_batch`: normal floats, valid token ids).
        open_dim_size: for a model whose input leaves a dimension open (a
            sequence length) and no inputs given: the random inputs' size
            there.
        labels: integer class labels of `sample_data`, to report accuracy.
        rtol: float32 exports must satisfy `max_rel_diff <= rtol`
            (`numerics.relative_difference`: relative to the output's scale).
            Quantized exports are not held to a tolerance: their report gives
            class agreement and accuracy instead.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: bad arguments, inputs that do not fit the model, int8
            without representative data, or a model whose own outputs are
            not finite on the verification inputs.
        OSError: `path` cannot be written (checked before any work).
        ExportVerificationError: the artefact's outputs are not finite, or a
            float32 export differs from the model by more than `rtol` (or a
            half-precision model rebuilt in float32 for TFLite differs from
            itself beyond its own rounding).
        ExportConversionError: TFLite's builtin ops cannot express the model
            (a `ValueError`; it names the op).
    """
    with exporting(
        model, path, format, quantize, representative_data, sample_data, labels, rtol, open_dim_size
    ) as report:
        return report


@contextlib.contextmanager
def exporting(
    model,
    path,
    format="saved_model",
    quantize=None,
    representative_data=None,
    sample_data=None,
    labels=None,
    rtol=1e-4,
    open_dim_size=None,
):
    """`export` in two steps: on entry the artefact is written beside `path`
    under a temporary name, run and verified, and its `ExportReport` yielded;
    it is moved into place when the block ends without an error, and removed
    otherwise. A caller writing several outputs enters one of these per
    export and moves all of them only once every one is verified."""
    # TensorFlow is imported where it is used: training and compaction run
    # on any Keras backend; only export needs TensorFlow.
    import tensorflow as tf

    _check_arguments(model, format, quantize, representative_data, rtol)
    path = os.fspath(path)
    check_destination(path, format)
    calibration = (
        None
        if representative_data is None
        else as_input_array(representative_data, NUM_CALIBRATION_SAMPLES)
    )
    if calibration is not None:
        check_inputs(model, calibration, "representative_data")
        calibration = _in_input_dtype(model, calibration)
    open_dim_size = check_open_dim_size(open_dim_size, "export")
    samples = _in_input_dtype(model, _verification_samples(model, sample_data, calibration, open_dim_size))
    if labels is not None and len(labels) != len(samples):
        raise ValueError(
            f"labels has {len(labels)} entries for {len(samples)} samples: "
            "give one label per sample."
        )
    expected = np.asarray(model(samples, training=False), dtype=np.float32)
    if not np.all(np.isfinite(expected)):
        raise ValueError(
            f"The Keras model's own outputs are not finite on the {len(samples)} "
            f"verification inputs, so no export to {path} can be verified: check "
            "the model's weights and the inputs."
        )
    if format == "tflite" and computes_in_half_precision(model):
        # TFLite's builtins have no float16 convolutions or matrix products:
        # the .tflite computes in float32, and is checked against the model
        # rebuilt to compute in float32 (itself checked against the model).
        model = _in_float32(model, samples, expected)
        expected = np.asarray(model(samples, training=False), dtype=np.float32)

    writer = atomic_directory if format == "saved_model" else atomic_path
    # The intermediate SavedModel and whatever TensorFlow's exporter and
    # converter put in the temporary folder live in one scratch folder,
    # removed on the way out: TensorFlow's own temporary folders are left
    # behind when a signal interrupts it.
    with writer(path) as artefact, tempfile.TemporaryDirectory(
        prefix="keras-compact-export-"
    ) as scratch, temporary_files_in(scratch):
        if format == "saved_model":
            model.export(artefact, format="tf_saved_model", verbose=False)
            # Keep the loaded object alive: it owns the variables `serve` reads.
            loaded = tf.saved_model.load(artefact)
            actual = loaded.serve(samples).numpy()
            size_bytes = _directory_size(artefact)
        else:
            saved_model_dir = os.path.join(scratch, "saved_model")
            model.export(saved_model_dir, format="tf_saved_model", verbose=False)
            with open(artefact, "wb") as f:
                f.write(_convert(saved_model_dir, quantize, calibration))
            actual = run_tflite(artefact, samples)
            size_bytes = os.path.getsize(artefact)
        report = _compare(
            expected, actual, labels, format, quantize, path, size_bytes
        )
        _check(report, rtol)
        yield report


def check_destination(path, format, what=None):
    """Raise now (an `OSError`) if `path` cannot receive a `format` export.

    On top of `files.check_writable`: a SavedModel destination that is an
    existing, non-empty folder without a `saved_model.pb` is refused, since
    the export replaces the folder whole and would delete what it holds.
    """
    what = what or f"{format} destination"
    folder = format == "saved_model"
    check_writable(path, what, folder=folder)
    if (
        folder
        and os.path.isdir(path)
        and os.listdir(path)
        and not os.path.exists(os.path.join(path, "saved_model.pb"))
    ):
        raise FileExistsError(
            f"{what} '{path}' is a folder that does not hold a SavedModel; the export "
            "replaces it whole, deleting what it holds: name a new or empty folder."
        )


def check_inputs(model, inputs, what):
    """Raise a `ValueError` naming `what` unless `inputs` (an array, or one
    per model input) are non-empty numbers shaped for `model`'s inputs."""
    arrays = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    if len(arrays) != len(model.inputs):
        raise ValueError(
            f"{what} gives {len(arrays)} input arrays; the model takes "
            f"{len(model.inputs)}: give one array per model input, in order."
        )
    for array, model_input in zip(arrays, model.inputs):
        array = np.asarray(array)
        expected = tuple(model_input.shape[1:])
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"{what} holds {array.dtype} values; the model takes numbers.")
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(f"{what} holds no samples: give at least one input.")
        shape = array.shape[1:]
        if len(shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, shape)
        ):
            raise ValueError(
                f"{what} holds samples of shape {shape}; the model takes "
                f"{expected} (after the batch axis)."
            )


def run_tflite(model_path, inputs):
    """Outputs of a one-input, one-output .tflite model on a batch of inputs.

    TFLite models are converted with batch size 1: the input is resized to the
    batch before tensors are allocated.
    """
    interpreter = tflite_interpreter(model_path, inputs.shape)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], inputs.astype(detail["dtype"], copy=False))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def tflite_interpreter(model_path, input_shape, num_threads=None):
    """An `ai_edge_litert` interpreter for a one-input `model_path`, its
    input resized to `input_shape` and its tensors allocated."""
    interpreter = _read_tflite(model_path, num_threads)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(input_shape))
    interpreter.allocate_tensors()
    return interpreter


def tflite_input_detail(model_path):
    """The input's details (`dtype`, `shape_signature`, ...) of a one-input `model_path`.

    Its tensors are not allocated: that would run shape inference at the
    default size of an open dimension, 1, where a model of open length may
    not run at all (a 'valid' convolution wider than one token).
    """
    return _read_tflite(model_path).get_input_details()[0]


def _read_tflite(model_path, num_threads=None):
    # Imported here: ai_edge_litert is the optional `export` extra.
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    except ValueError as error:  # empty, truncated or not a flatbuffer at all
        raise ValueError(
            f"cannot read '{model_path}' as a TFLite model ({str(error).strip()}): "
            "is it a complete .tflite file written by the TFLite converter?"
        ) from None
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ValueError(
            f"{model_path} has {len(inputs)} inputs; only one-input models "
            "are supported."
        )
    return interpreter


def as_input_array(data, limit=None):
    """The first `limit` inputs of `data` as one float32 array.

    `data` is an array of samples, or a `tf.data.Dataset` yielding input
    batches or `(inputs, labels, ...)` batches.
    """
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        batches, count = [], 0
        for batch in data.as_numpy_iterator():
            if isinstance(batch, tuple):
                batch = batch[0]
            batches.append(batch)
            count += len(batch)
            if limit is not None and count >= limit:
                break
        data = np.concatenate(batches)
    return np.asarray(data[:limit], dtype=np.float32)


def _check_arguments(model, format, quantize, representative_data, rtol):
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    if quantize not in QUANTIZATIONS:
        raise ValueError(
            f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}."
        )
    if quantize and format != "tflite":
        raise ValueError(
            f"quantize={quantize!r} applies to format='tflite' only; a "
            "SavedModel keeps the model's own dtypes."
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization calibrates each activation's range on real "
            "inputs: pass representative_data= (a few hundred training "
            "samples), or use quantize='float16', which needs none."
        )
    if not (isinstance(rtol, (int, float)) and math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "export() verifies models with one input and one output; this "
            f"model has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs."
        )


def _verification_samples(model, sample_data, calibration, open_dim_size):
    if sample_data is not None:
        samples = as_input_array(sample_data)
        check_inputs(model, samples, "sample_data")
        return samples
    if calibration is not None:
        return calibration[:NUM_VERIFICATION_SAMPLES]
    if None in model.inputs[0].shape[1:] and open_dim_size is None:
        raise ValueError(
            f"The model's input shape {model.inputs[0].shape} leaves a dimension open (a sequence "
            "length, say): give inputs to check the export on, sample_data= (on the command line "
            "--sample-data FILE or --representative-data FILE), or open_dim_size=N for random "
            "ones of that size (--open-dim-size N)."
        )
    return random_batch(model, batch_size=NUM_VERIFICATION_SAMPLES, unknown_size=open_dim_size)


def _in_input_dtype(model, samples):
    """`samples` (float32, as `as_input_array` reads them) in an integer input's own dtype.

    An exported model's signature keeps the input's dtype: a SavedModel or
    TFLite model with token-id inputs refuses float32 values.
    """
    dtype = model.inputs[0].dtype
    return samples.astype(dtype) if keras.backend.is_int_dtype(dtype) else samples


def _in_float32(model, samples, expected):
    """`model` rebuilt with every layer computing in float32, the same weights.

    Checked against `model` on `samples` (its outputs `expected`) at the
    tolerance of the model's own precision (`verification_tolerances`).
    """

    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    rebuilt = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    rebuilt.set_weights(model.get_weights())
    actual = np.asarray(rebuilt(samples, training=False), dtype=np.float32)
    atol, rtol = verification_tolerances(model)
    if not within_tolerance(expected, actual, atol, rtol):
        difference = float(np.max(np.abs(actual - expected)))
        raise ExportVerificationError(
            f"The model computes in half precision, which TFLite cannot: rebuilt to compute in "
            f"float32 for TFLite, it differs from itself by {difference:.3g}, beyond its own "
            f"rounding (atol={atol:.3g}, rtol={rtol:.3g}); nothing was written. A layer whose "
            "get_config() omits an argument rebuilds into another layer."
        )
    return rebuilt


def _conversion_failure(error):
    """The first lines of `error` that say why: the converter's message is pages of MLIR
    diagnostics, `<unknown>:0: error: loc(<where in the graph>): <why>`, one per failed op."""
    reasons = []
    for line in str(error).splitlines():
        if "error:" not in line:
            continue
        reason = line.split("error:", 1)[1].strip()
        if reason.startswith("loc("):
            reason = reason.rsplit("): ", 1)[-1]
        reasons.append(reason)
    return "; ".join(list(dict.fromkeys(reasons))[:2]) or str(error).strip().splitlines()[0]


def _convert(saved_model_dir, quantize, calibration):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    # Builtins only: an op TFLite lacks fails here, naming the op, rather
    # than in the interpreter of whoever deploys the file.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [sample[np.newaxis]] for sample in calibration
        )
        # Integer kernels for every op, or a conversion error: no silent
        # float fallback. Input and output stay float32, so the .tflite is a
        # drop-in replacement for the float model.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
    try:
        return converter.convert()
    except Exception as error:  # noqa: BLE001 - the converter's ConverterError is not public API
        reason = _conversion_failure(error)
        raise ExportConversionError(
            "TFLite cannot convert the model with builtin ops only "
            f"({type(error).__name__}: {reason[:500]}). Nothing was written. Export a SavedModel "
            "instead, or replace the layer that needs that op (a recurrent layer, say, with a "
            "convolution or attention)."
        ) from None


def _compare(expected, actual, labels, format, quantize, path, size_bytes):
    actual = np.asarray(actual, dtype=np.float32).reshape(expected.shape)
    if not np.all(np.isfinite(actual)):
        raise ExportVerificationError(
            f"The {format} export for {path} produces non-finite outputs: it "
            "was not written. Check that the model's own outputs are finite."
        )
    report = ExportReport(
        format=format,
        quantize=quantize,
        path=path,
        size_bytes=size_bytes,
        num_samples=len(expected),
        max_abs_diff=float(np.max(np.abs(actual - expected))),
        max_rel_diff=relative_difference(expected, actual),
    )
    if expected.ndim >= 2 and expected.shape[-1] > 1:
        predicted = np.argmax(actual, axis=-1)
        keras_predicted = np.argmax(expected, axis=-1)
        report.class_agreement = float(np.mean(predicted == keras_predicted))
        if labels is not None:
            labels = np.asarray(labels).reshape(predicted.shape)
            report.accuracy = float(np.mean(predicted == labels))
            report.keras_accuracy = float(np.mean(keras_predicted == labels))
    return report


def _check(report, rtol):
    if report.quantize is None and report.max_rel_diff > rtol:
        raise ExportVerificationError(
            f"The {report.format} export for {report.path} differs from the "
            f"Keras model by {report.max_rel_diff:.2e} relative to its output "
            f"scale (max abs {report.max_abs_diff:.2e}), over the tolerance "
            f"{rtol:.0e}: it was not written. Raise rtol= only if the model "
            "is numerically sensitive by design."
        )


def _directory_size(directory):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    )
