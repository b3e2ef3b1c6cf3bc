"""The networks of the paper's experiments, as plain Keras models (Sequential; the ViT Functional).

Layer names are stable (``conv1``, ``fc1``, ...) so results, tables and
penalties can name layers. `width` scales every hidden layer's neurons (a
quick run, a test); the classifier layer always has `num_classes` units.

Activations: "relu" is the paper's ReLU. The paper redefines ReLU so that its
gradient at 0 is 0 (x for x > e, else 0); TensorFlow's ReLU gradient is
already 0 at 0 (it passes gradient only where x > 0), so a neuron driven to
exactly zero gets no push back from the data term.
"""

import keras

ACTIVATIONS = ("relu", "tanh", "sigmoid")


def _units(count, width):
    return max(1, round(count * width))


def lenet5(
    input_shape=(28, 28, 1), num_classes=10, activation="relu", width=1.0, keras_module=keras
):
    """Caffe's LeNet-5: conv 20 5x5, max-pool 2, conv 50 5x5, max-pool 2, dense 500, dense 10.

    431,080 parameters on 28x28x1 inputs. Caffe's LeNet applies its
    non-linearity only after ip1; here `activation` follows conv1, conv2 and
    fc1 alike, so that the activation experiment (the paper's "ReLU, conv2 on
    LeNet") compares every hidden layer. The parameter count is the same.
    `keras_module=tf_keras` builds the same net for tools that need Keras 2
    (the tensorflow-model-optimization peer in benchmarks/).
    """
    k = keras_module
    return k.Sequential(
        [
            k.Input(input_shape),
            k.layers.Conv2D(_units(20, width), 5, activation=activation, name="conv1"),
            k.layers.MaxPooling2D(2, name="pool1"),
            k.layers.Conv2D(_units(50, width), 5, activation=activation, name="conv2"),
            k.layers.MaxPooling2D(2, name="pool2"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(_units(500, width), activation=activation, name="fc1"),
            k.layers.Dense(num_classes, activation="softmax", name="fc2"),
        ],
        name="lenet5",
    )


def _conv_bn(filters, name, activation, **kwargs):
    """Conv, BatchNorm, activation: the BatchNorm's gamma/beta join the conv's neuron groups.

    BatchNorm momentum 0.9, not Keras's 0.99: the prox shrinks the kernels at every step, and
    moving statistics averaged over ~100 steps lag behind them. Measured on mnist5k, width 0.25,
    4 epochs of ProxSGD: 37% test accuracy at 0.99 against 96% with batch statistics; 96% at 0.9.
    """
    return [
        keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name, **kwargs),
        keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn"),
        keras.layers.Activation(activation, name=f"{name}_{activation}"),
    ]


def vgg_cifar(input_shape=(32, 32, 3), num_classes=10, activation="relu", width=1.0):
    """A VGG-style net for 32x32 images: 4 stages of two 3x3 conv+BN, dense 512, classifier.

    Stages of 64, 128, 256, 512 filters, each ending in a 2x2 max-pool;
    about 5.7M parameters at width 1.
    """
    layers = [keras.Input(input_shape)]
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for index in (1, 2):
            layers += _conv_bn(_units(filters, width), f"conv{stage}_{index}", activation)
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{stage}"))
    layers += [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(_units(512, width), activation=activation, name="fc1"),
        keras.layers.Dense(num_classes, activation="softmax", name="predictions"),
    ]
    return keras.Sequential(layers, name="vgg_cifar")


def vgg_small(conv_widths=(32, 32, 64, 64, 128, 128), fc_units=256, keras_module=keras):
    """The benchmarks' VGG-style net for 32x32x3 inputs, no BatchNorm.

    Three blocks of two 3x3 convs (32, 64, 128 filters by default), each
    block ending in a 2x2 max-pool, then dense `fc_units` and dense 10:
    814,122 parameters, 39.2M multiply-adds at the default widths.
    `conv_widths` (six numbers) and `fc_units` set other widths, such as those
    compaction left; `keras_module=tf_keras` builds it for the TFMOT peer.
    """
    if len(conv_widths) != 6:
        raise ValueError(f"vgg_small has six convs (two per block), got widths {conv_widths}.")
    k = keras_module
    stack = [k.Input((32, 32, 3))]
    for index, filters in enumerate(conv_widths):
        block, conv = divmod(index, 2)
        stack.append(
            k.layers.Conv2D(
                filters, 3, padding="same", activation="relu", name=f"block{block + 1}_conv{conv + 1}"
            )
        )
        if conv == 1:
            stack.append(k.layers.MaxPooling2D(name=f"block{block + 1}_pool"))
    stack += [
        k.layers.Flatten(name="flatten"),
        k.layers.Dense(fc_units, activation="relu", name="fc1"),
        k.layers.Dense(10, activation="softmax", name="fc2"),
    ]
    return k.Sequential(stack, name="vgg_small")


def _imagenet_classifier(num_classes, activation, width):
    """AlexNet's and VGG's head: flatten, fc6 and fc7 of 4096 with dropout 0.5, fc8."""
    return [
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(_units(4096, width), activation=activation, name="fc6"),
        keras.layers.Dropout(0.5, name="drop6"),
        keras.layers.Dense(_units(4096, width), activation=activation, name="fc7"),
        keras.layers.Dropout(0.5, name="drop7"),
        keras.layers.Dense(num_classes, activation="softmax", name="fc8"),
    ]


def alexnet(input_shape=(227, 227, 3), num_classes=1000, activation="relu", width=1.0):
    """AlexNet (single tower, no local response normalization): about 62M parameters at 227x227.

    conv1 96 11x11/4, pool, conv2 256 5x5, pool, conv3 384, conv4 384,
    conv5 256 (3x3), pool, fc6 4096, fc7 4096 (dropout 0.5), fc8. fc6 and fc7
    hold about 89% of the parameters, where the paper removes most neurons.
    """
    pool = {"pool_size": 3, "strides": 2}
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(
                _units(96, width), 11, strides=4, activation=activation, name="conv1"
            ),
            keras.layers.MaxPooling2D(**pool, name="pool1"),
            keras.layers.Conv2D(
                _units(256, width), 5, padding="same", activation=activation, name="conv2"
            ),
            keras.layers.MaxPooling2D(**pool, name="pool2"),
            keras.layers.Conv2D(
                _units(384, width), 3, padding="same", activation=activation, name="conv3"
            ),
            keras.layers.Conv2D(
                _units(384, width), 3, padding="same", activation=activation, name="conv4"
            ),
            keras.layers.Conv2D(
                _units(256, width), 3, padding="same", activation=activation, name="conv5"
            ),
            keras.layers.MaxPooling2D(**pool, name="pool5"),
            *_imagenet_classifier(num_classes, activation, width),
        ],
        name="alexnet",
    )


def vgg13(input_shape=(224, 224, 3), num_classes=1000, activation="relu", width=1.0):
    """VGG-13 (configuration B of Simonyan and Zisserman): about 133M parameters at 224x224."""
    layers = [keras.Input(input_shape)]
    for stage, filters in enumerate((64, 128, 256, 512, 512), start=1):
        for index in (1, 2):
            layers.append(
                keras.layers.Conv2D(
                    _units(filters, width),
                    3,
                    padding="same",
                    activation=activation,
                    name=f"conv{stage}_{index}",
                )
            )
        layers.append(keras.layers.MaxPooling2D(2, name=f"pool{stage}"))
    layers += _imagenet_classifier(num_classes, activation, width)
    return keras.Sequential(layers, name="vgg13")


def vit(
    input_shape=(28, 28, 1),
    num_classes=10,
    patch=7,
    dim=64,
    heads=4,
    blocks=4,
    mlp=128,
    key_dim=None,
    mlp_units=None,
    head_counts=None,
):
    """A small Vision Transformer built from stock Keras layers only (a Functional model).

    Patch embedding (Conv2D with kernel and stride `patch`), Reshape to tokens, a learned
    position embedding, `blocks` pre-norm encoder blocks, a final LayerNormalization, the mean
    over tokens (no class token) and the classifier. Each block:

        x = x + MultiHeadAttention(LayerNormalization(x))        # `heads` heads of `key_dim`
        x = x + Dense(dim)(Dense(mlp, gelu)(LayerNormalization(x)))

    The position embedding is `Embedding(tokens, dim)` read at positions 0..tokens-1, which
    `keras.ops` compute from the symbolic tokens (cumulative sum of ones): no custom layer, so
    the model saves, loads and converts to TFLite as plain Keras. Layer names are stable:
    `patch_embed`, `pos_embed`, `block{b}_ln1`, `block{b}_mha`, `block{b}_ln2`, `block{b}_mlp1`
    (the FFN neurons), `block{b}_mlp2`, `final_ln`, `predictions`.

    At the defaults (28x28x1, patch 7: 16 tokens; dim 64, 4 heads of 16, 4 blocks, mlp 128)
    it has 138,890 parameters. `head_counts` and `mlp_units` (one number per block) build the
    same network narrower, as compaction leaves it (the Torch-Pruning peer's sizes).
    """
    height, width, _ = input_shape
    if height % patch or width % patch:
        raise ValueError(f"patch {patch} does not divide the input {height}x{width}.")
    key_dim = key_dim or dim // heads
    head_counts = list(head_counts or [heads] * blocks)
    mlp_units = list(mlp_units or [mlp] * blocks)
    if len(head_counts) != blocks or len(mlp_units) != blocks:
        raise ValueError(
            f"head_counts {head_counts} and mlp_units {mlp_units} need one number per block ({blocks})."
        )
    layers = keras.layers
    tokens = (height // patch) * (width // patch)
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(dim, patch, strides=patch, name="patch_embed")(inputs)
    x = layers.Reshape((tokens, dim), name="tokens")(x)
    positions = keras.ops.cumsum(keras.ops.ones_like(x[:, :, 0], dtype="int32"), axis=1) - 1
    x = layers.Add(name="add_positions")([x, layers.Embedding(tokens, dim, name="pos_embed")(positions)])
    for block in range(blocks):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_ln1")(x)
        h = layers.MultiHeadAttention(
            head_counts[block], key_dim, name=f"block{block}_mha"
        )(h, h)
        x = layers.Add(name=f"block{block}_add1")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{block}_ln2")(x)
        h = layers.Dense(mlp_units[block], activation="gelu", name=f"block{block}_mlp1")(h)
        h = layers.Dense(dim, name=f"block{block}_mlp2")(h)
        x = layers.Add(name=f"block{block}_add2")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vit")
