"""The MNIST-era seed models: softmax regression, an MLP, LeNet and a batch-norm CNN.

Every builder takes the data set's input shape, so the same variant runs on MNIST,
Fashion-MNIST or CIFAR; layer sizes below are the seeds' at 1x28x28 input.
"""

from __future__ import annotations

from torch import nn

from ._registry import InputShape, Knob, register
from ._util import flat_features

_DROPOUT = Knob(0.0, "dropout probability", kind=float, low=0.0, high=1.0)


@register(
    "softmax",
    description="softmax regression: one Linear layer on the flattened image",
    origin="seed notebook (MNIST, SGD lr .03, 2 epochs)",
    knobs={},
    train_defaults={"optimizer": "sgd", "lr": 0.03},
)
def softmax(shape: InputShape) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(shape.channels * shape.size**2, shape.num_classes))


@register(
    "mlp",
    description="multi-layer perceptron 784-256-128-64-10 with ReLU; width sets the first hidden layer",
    origin="seed notebook (MNIST MLP)",
    knobs={
        "width": Knob(256, "units of the first hidden layer (each next layer halves it)", low=1),
        "depth": Knob(3, "number of hidden layers", low=1, high=8),
        "dropout": _DROPOUT,
    },
    train_defaults={"optimizer": "sgd", "lr": 0.03},
)
def mlp(shape: InputShape, width: int, depth: int, dropout: float) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    features = shape.channels * shape.size**2
    for i in range(depth):
        units = max(width >> i, 1)
        layers += [nn.Linear(features, units), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = units
    layers.append(nn.Linear(features, shape.num_classes))
    return nn.Sequential(*layers)


@register(
    "lenet",
    description="LeNet-style CNN: conv 10 k5, pool, conv 20 k5, pool, fc 320->10",
    origin="pytorch/examples MNIST net of the seed (SGD lr .01 momentum .5)",
    knobs={
        "width": Knob(10, "channels of the first conv (the second has twice as many)", low=1),
        "dropout": Knob(0.0, "Dropout2d probability after the second conv", kind=float, low=0.0, high=1.0),
    },
    train_defaults={"optimizer": "momentum", "lr": 0.01, "momentum": 0.5},
)
def lenet(shape: InputShape, width: int, dropout: float) -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(shape.channels, width, kernel_size=5),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel_size=5),
        nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(flat_features(features, shape), shape.num_classes))


@register(
    "bn-cnn",
    description="conv k5 s2, LeakyReLU, BN, conv k3 s2, LeakyReLU, BN, fc 250->10 (cross-entropy)",
    origin="seed notebook 'Make Your Own Neural Network' CNN; Sigmoid+MSE replaced by cross-entropy",
    knobs={"width": Knob(10, "channels of both convs", low=1)},
    train_defaults={"optimizer": "adam", "lr": 1e-3},
)
def bn_cnn(shape: InputShape, width: int) -> nn.Module:
    features = nn.Sequential(
        nn.Conv2d(shape.channels, width, kernel_size=5, stride=2),
        nn.LeakyReLU(0.02),
        nn.BatchNorm2d(width),
        nn.Conv2d(width, width, kernel_size=3, stride=2),
        nn.LeakyReLU(0.02),
        nn.BatchNorm2d(width),
        nn.Flatten(),
    )
    return nn.Sequential(features, nn.Linear(flat_features(features, shape), shape.num_classes))
