"""Export to SavedModel and TFLite (float32, float16, int8), each artefact verified.

Route: `model.export(dir, format="tf_saved_model")` (Keras's own SavedModel
export), then `tf.lite.TFLiteConverter.from_saved_model` restricted to the
TFLite builtin ops. Keras's `format="litert"` takes the same route but also
enables TF Select ops, so a model using an op TFLite lacks converts "fine" and
then fails to load in a plain LiteRT interpreter; restricted to builtins the
conversion itself fails and says which op. `from_concrete_functions` is never
used: on Keras 3 models it silently writes uninitialised weights.

Every artefact is written next to its destination under a temporary name, run
(SavedModel through TensorFlow, .tflite through `ai_edge_litert`), compared
with the Keras model, and only then moved into place.
"""

import dataclasses
import os
import tempfile

import numpy as np

FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = (None, "float16", "int8")

# Calibration samples fed to the int8 converter; a few hundred is the usual
# advice, more only slows conversion.
NUM_CALIBRATION_SAMPLES = 200
# Samples compared against the Keras model when the caller gives none.
NUM_VERIFICATION_SAMPLES = 64


class ExportVerificationError(RuntimeError):
    """An exported artefact computes something other than the Keras model."""


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
        max_rel_diff: `max_abs_diff / max |Keras|`: relative to the output's
            scale, since element-wise ratios blow up on outputs near zero.
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
):
    """Exports `model` to `path` and checks the artefact against the model.

    Args:
        model: a built Keras model with one input and one output.
        path: destination: a directory for `"saved_model"`, a file (by
            convention `*.tflite`) for `"tflite"`. Replaced atomically; on a
            failed verification nothing is written there.
        format: `"saved_model"` or `"tflite"`.
        quantize: TFLite only. `None` (float32), `"float16"` (weights stored
            in float16) or `"int8"` (full-integer kernels, float32 input and
            output, activation ranges calibrated on `representative_data`).
        representative_data: inputs for int8 calibration (required for
            `"int8"`): an array of samples, or a `tf.data.Dataset` yielding
            inputs or `(inputs, labels)` batches. The first
            `NUM_CALIBRATION_SAMPLES` are used.
        sample_data: inputs to verify on (same forms). Defaults to the
            representative data, else to seeded random normal inputs.
        labels: integer class labels of `sample_data`, to report accuracy.
        rtol: float32 exports must satisfy `max_rel_diff <= rtol`.
            Quantized exports are not held to a tolerance: their report gives
            class agreement and accuracy instead.

    Returns:
        An `ExportReport`.

    Raises:
        ValueError: bad arguments, or int8 without representative data.
        ExportVerificationError: the artefact's outputs are not finite, or a
            float32 export differs from the model by more than `rtol`.
    """
    # TensorFlow is imported where it is used: training and compaction run
    # on any Keras backend; only export needs TensorFlow.
    import tensorflow as tf

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
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "export() verifies models with one input and one output; this "
            f"model has {len(model.inputs)} inputs and {len(model.outputs)} "
            "outputs."
        )

    calibration = (
        None
        if representative_data is None
        else as_input_array(representative_data, NUM_CALIBRATION_SAMPLES)
    )
    samples = _verification_samples(model, sample_data, calibration)
    expected = np.asarray(model(samples, training=False), dtype=np.float32)

    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".export-") as scratch:
        saved_model_dir = os.path.join(scratch, "saved_model")
        model.export(saved_model_dir, format="tf_saved_model", verbose=False)
        if format == "saved_model":
            artefact = saved_model_dir
            # Keep the loaded object alive: it owns the variables `serve` reads.
            loaded = tf.saved_model.load(artefact)
            actual = loaded.serve(samples).numpy()
            size_bytes = _directory_size(artefact)
        else:
            artefact = os.path.join(scratch, "model.tflite")
            with open(artefact, "wb") as f:
                f.write(_convert(saved_model_dir, quantize, calibration))
            actual = run_tflite(artefact, samples)
            size_bytes = os.path.getsize(artefact)
        report = _compare(
            expected, actual, labels, format, quantize, path, size_bytes
        )
        _check(report, rtol)
        _move_into_place(artefact, path)
    return report


def run_tflite(model_path, inputs):
    """Outputs of a one-input, one-output .tflite model on a batch of inputs.

    TFLite models are converted with batch size 1: the input is resized to the
    batch before tensors are allocated.
    """
    interpreter = tflite_interpreter(model_path, inputs.shape)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def tflite_interpreter(model_path, input_shape=None, num_threads=None):
    """An `ai_edge_litert` interpreter for a one-input `model_path`, its
    input resized to `input_shape` (if given) and its tensors allocated."""
    # Imported here: ai_edge_litert is the optional `export` extra.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise ValueError(
            f"{model_path} has {len(inputs)} inputs; only one-input models "
            "are supported."
        )
    if input_shape is not None:
        interpreter.resize_tensor_input(inputs[0]["index"], list(input_shape))
    interpreter.allocate_tensors()
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


def _verification_samples(model, sample_data, calibration):
    if sample_data is not None:
        return as_input_array(sample_data)
    if calibration is not None:
        return calibration[:NUM_VERIFICATION_SAMPLES]
    shape = (NUM_VERIFICATION_SAMPLES,) + tuple(model.inputs[0].shape[1:])
    if None in shape:
        raise ValueError(
            f"The model's input shape {model.inputs[0].shape} has unknown "
            "dimensions beyond the batch: pass sample_data= to verify on."
        )
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


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
    return converter.convert()


def _compare(expected, actual, labels, format, quantize, path, size_bytes):
    actual = np.asarray(actual, dtype=np.float32).reshape(expected.shape)
    if not np.all(np.isfinite(actual)):
        raise ExportVerificationError(
            f"The {format} export for {path} produces non-finite outputs: it "
            "was not written. Check that the model's own outputs are finite."
        )
    max_abs_diff = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    report = ExportReport(
        format=format,
        quantize=quantize,
        path=path,
        size_bytes=size_bytes,
        num_samples=len(expected),
        max_abs_diff=max_abs_diff,
        max_rel_diff=max_abs_diff / scale if scale > 0 else max_abs_diff,
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


def _move_into_place(artefact, path):
    if not os.path.isdir(artefact):
        os.replace(artefact, path)
        return
    # A directory cannot be replaced in one step: move the old one aside
    # first, so `path` is always either the old or the new SavedModel.
    if os.path.isdir(path):
        old = tempfile.mkdtemp(dir=os.path.dirname(artefact), prefix="old-")
        os.replace(path, os.path.join(old, "saved_model"))
    elif os.path.exists(path):
        raise FileExistsError(
            f"{path} exists and is not a directory: choose another SavedModel "
            "destination."
        )
    os.replace(artefact, path)


def _directory_size(directory):
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    )
