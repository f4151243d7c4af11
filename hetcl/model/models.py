"""The models `hetcl train --model NAME` knows. Each is a function returning a fresh Sequential
for an input shape and class count; custom models are built the same way in Python."""
from ..errors import HetclError
from .batchnorm import BatchNorm2D
from .graph import Graph, Sequential
from .layers import Add, Conv2D, Dense, Flatten, GlobalAvgPool, MaxPool2D, ReLU


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


def _conv_bn(graph, x, c_in, c_out, size, stride, relu):
    """A convolution without bias (batch norm's shift replaces it), batch norm, ReLU if asked."""
    x = graph.add(Conv2D(c_in, c_out, size, stride=stride, padding=size // 2, bias=False), x)
    x = graph.add(BatchNorm2D(c_out), x)
    return graph.add(ReLU(), x) if relu else x


def _basic_block(graph, x, c_in, c_out, stride):
    """He et al.'s basic block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut), the
    shortcut x itself, or a strided 1x1 convolution + batch norm where the shape changes."""
    y = _conv_bn(graph, x, c_in, c_out, 3, stride, relu=True)
    y = _conv_bn(graph, y, c_out, c_out, 3, 1, relu=False)
    if stride != 1 or c_in != c_out:
        x = _conv_bn(graph, x, c_in, c_out, 1, stride, relu=False)
    return graph.add(ReLU(), graph.add(Add(), y, x))


def resnet20(input_shape=(3, 32, 32), classes=10, seed=None):
    """He et al. 2016's CIFAR ResNet-20: conv16 + batch norm, 3 stages of 3 basic blocks
    (16, 32, 64 filters; stages 2 and 3 start with stride 2 and a 1x1 projection shortcut),
    global average pooling, dense classes. 32x32x3 or 28x28x1 images."""
    graph = Graph(seed=seed)
    x = graph.input(input_shape)
    x = _conv_bn(graph, x, input_shape[0], 16, 3, 1, relu=True)
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            x = _basic_block(graph, x, channels, width, 2 if stage and not block else 1)
            channels = width
    graph.add(Dense(64, classes), graph.add(GlobalAvgPool(), x))
    return graph


MODELS = {"lenet5": lenet5, "mlp": mlp, "cifar-cnn": cifar_cnn, "cifar-cnn-wide": cifar_cnn_wide,
          "resnet20": resnet20}
# The input each model is built for by default (Fashion-MNIST, CIFAR-10): benchmarks and tuning.
INPUT_SHAPES = {"lenet5": (1, 28, 28), "mlp": (1, 28, 28), "cifar-cnn": (3, 32, 32),
                "cifar-cnn-wide": (3, 32, 32), "resnet20": (3, 32, 32)}


def build_model(name, input_shape, classes=10, seed=None):
    if name not in MODELS:
        raise HetclError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return MODELS[name](tuple(input_shape), classes, seed).build()
