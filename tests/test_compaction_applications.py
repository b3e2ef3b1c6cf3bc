"""keras.applications architectures (weights=None) with zeroed neuron groups, compacted.

A quarter of the neurons of every hidden layer are zeroed as the group lasso
would leave them (kernel slice, bias, following BatchNorm gamma and beta). The
compact model must compute the same outputs, with fewer parameters.
"""

import numpy as np
import pytest

import keras
import keras_compact
from keras_compact.penalties import GroupLasso

A = keras.applications


def zero_neuron_groups(model, fraction=0.25):
    """Zero the first `fraction` of the neurons of every hidden neuron layer."""
    for target in GroupLasso(1.0).resolve(model):
        dead = slice(0, max(1, int(target.num_neurons * fraction)))
        for member in target.members:
            value = np.array(member.view(member.variable))
            value[:, dead, :] = 0.0
            member.variable.assign(value.reshape(member.variable.shape))


def check_application(build, input_shape):
    model = build(weights=None, input_shape=input_shape, classes=10)
    zero_neuron_groups(model)
    compact_model, report = keras_compact.compact(model, atol=1e-4, rtol=1e-3)
    assert report.params_after < report.params_before
    assert report.macs_after < report.macs_before
    data = np.random.default_rng(3).uniform(0, 255, size=(2, *input_shape)).astype("float32")
    np.testing.assert_allclose(compact_model(data), model(data), rtol=1e-3, atol=1e-4)
    return report


FAST = [
    ("MobileNetV2", lambda **kw: A.MobileNetV2(alpha=0.35, **kw), (32, 32, 3)),
    ("ResNet50", A.ResNet50, (32, 32, 3)),
]

# One architecture per family, run by `make test-all`.
FAMILIES = [
    ("VGG16", A.VGG16, (32, 32, 3)),
    ("ResNet50V2", A.ResNet50V2, (32, 32, 3)),
    ("InceptionV3", A.InceptionV3, (75, 75, 3)),
    ("InceptionResNetV2", A.InceptionResNetV2, (75, 75, 3)),
    ("Xception", A.Xception, (71, 71, 3)),
    ("MobileNet", lambda **kw: A.MobileNet(alpha=0.25, **kw), (32, 32, 3)),
    ("MobileNetV3Small", lambda **kw: A.MobileNetV3Small(minimalistic=False, **kw), (32, 32, 3)),
    ("DenseNet121", A.DenseNet121, (32, 32, 3)),
    ("NASNetMobile", A.NASNetMobile, (32, 32, 3)),
    ("EfficientNetB0", A.EfficientNetB0, (32, 32, 3)),
    ("EfficientNetV2B0", A.EfficientNetV2B0, (32, 32, 3)),
    ("ConvNeXtTiny", A.ConvNeXtTiny, (32, 32, 3)),
]


@pytest.mark.parametrize("name,build,input_shape", FAST, ids=[f[0] for f in FAST])
def test_application_fast(name, build, input_shape):
    check_application(build, input_shape)


@pytest.mark.slow
@pytest.mark.parametrize("name,build,input_shape", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_application_family(name, build, input_shape):
    check_application(build, input_shape)
