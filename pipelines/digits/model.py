"""The seed experiment's model: an MNIST-style CNN, and the digits data it trains on.

Three Conv+BatchNorm+ReLU+MaxPool blocks, two Dense(512)+Dropout layers and a softmax,
as in "Optimizing TensorFlow models for serving". The data is scikit-learn's 8x8
handwritten digits (shipped with the package, no download), upscaled to 28x28 so the
seed's architecture applies unchanged.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 28
NUM_CLASSES = 10
IMAGE_KEY = "image"
LABEL_KEY = "label"


def digits_28x28() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as float32 [N, 28, 28, 1] images in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    # Nearest-neighbour upscaling 8x8 -> 24x24, padded to 28x28 like MNIST's border.
    upscaled = np.kron(images, np.ones((3, 3), dtype=np.float32))
    padded = np.pad(upscaled, ((0, 0), (2, 2), (2, 2)))
    return padded[..., None], digits.target.astype(np.int64)


def seed_cnn(dense_units: int = 512):
    """The seed CNN; `dense_units` widens the two Dense layers (the seed's is 512)."""
    import keras

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name=IMAGE_KEY)
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same")(x)
        # momentum 0.9: the moving statistics settle within the few hundred steps a small
        # dataset gives (at the default 0.99 they still hold their initial values).
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPool2D()(x)
    x = keras.layers.Flatten()(x)
    for _ in range(2):
        x = keras.layers.Dense(dense_units, activation="relu")(x)
        x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="seed_cnn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
