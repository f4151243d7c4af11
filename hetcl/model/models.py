"""The models `hetcl train --model NAME` knows. Each is a function returning a fresh Sequential
for an input shape and class count; custom models are built the same way in Python."""
from ..errors import HetclError
from .graph import Sequential
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU


def lenet5(input_shape=(1, 28, 28), classes=10, seed=None):
    """LeCun's LeNet-5 with ReLU and max-pooling: conv6-5x5-pad2, pool, conv16-5x5, pool,
    120, 84, classes."""
    c, h, w = input_shape
    flat = 16 * ((h // 2 - 4) // 2) * ((w // 2 - 4) // 2)  # 5x5 for 28x28
    return Sequential([Conv2D(c, 6, 5, padding=2), ReLU(), MaxPool2D(2),
                       Conv2D(6, 16, 5), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(flat, 120), ReLU(), Dense(120, 84), ReLU(), Dense(84, classes)],
                      seed=seed, input_shape=input_shape)


def mlp(input_shape=(1, 28, 28), classes=10, seed=None):
    """784-256-128-10 for 28x28 images (the input size follows the data)."""
    size = 1
    for s in input_shape:
        size *= s
    return Sequential([Flatten(), Dense(size, 256), ReLU(), Dense(256, 128), ReLU(),
                       Dense(128, classes)], seed=seed, input_shape=input_shape)


def cifar_cnn(input_shape=(3, 32, 32), classes=10, seed=None):
    """VGG-style for 32x32x3: conv64, conv64, pool, conv128, conv128, pool, dense 256, dense 10
    (3x3 convolutions, padding 1)."""
    c, h, w = input_shape
    return Sequential([Conv2D(c, 64, 3, padding=1), ReLU(), Conv2D(64, 64, 3, padding=1), ReLU(),
                       MaxPool2D(2),
                       Conv2D(64, 128, 3, padding=1), ReLU(), Conv2D(128, 128, 3, padding=1),
                       ReLU(), MaxPool2D(2), Flatten(),
                       Dense(128 * (h // 4) * (w // 4), 256), ReLU(), Dense(256, classes)],
                      seed=seed, input_shape=input_shape)


def cifar_cnn_wide(input_shape=(3, 32, 32), classes=10, seed=None):
    """cifar-cnn with Krizhevsky-sized dense layers (4096, 4096, classes): 50M of its 50.3M
    parameters are dense weights, the case hybrid parallelism is for (hybrid.py)."""
    c, h, w = input_shape
    return Sequential([Conv2D(c, 64, 3, padding=1), ReLU(), Conv2D(64, 64, 3, padding=1), ReLU(),
                       MaxPool2D(2),
                       Conv2D(64, 128, 3, padding=1), ReLU(), Conv2D(128, 128, 3, padding=1),
                       ReLU(), MaxPool2D(2), Flatten(),
                       Dense(128 * (h // 4) * (w // 4), 4096), ReLU(), Dense(4096, 4096), ReLU(),
                       Dense(4096, classes)],
                      seed=seed, input_shape=input_shape)


MODELS = {"lenet5": lenet5, "mlp": mlp, "cifar-cnn": cifar_cnn, "cifar-cnn-wide": cifar_cnn_wide}
# The input each model is built for by default (Fashion-MNIST, CIFAR-10): benchmarks and tuning.
INPUT_SHAPES = {"lenet5": (1, 28, 28), "mlp": (1, 28, 28), "cifar-cnn": (3, 32, 32),
                "cifar-cnn-wide": (3, 32, 32)}


def build_model(name, input_shape, classes=10, seed=None):
    if name not in MODELS:
        raise HetclError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](tuple(input_shape), classes, seed).build()
