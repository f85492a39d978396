"""tiny-cnn: two 3x3 convolutions with batch norm and a global average pool.

What bench needs from a variant: a builder that takes the data set's input shape (channels,
size, classes) and its knobs, and returns a ``torch.nn.Module`` mapping a batch of normalised
images (N, C, H, W) to class scores (N, classes). ``bench.register_variant`` says what the knobs
are (they become ``--knob NAME=VALUE`` and searchable dimensions), how its source trained it, and
where it comes from.
"""

from __future__ import annotations

from torch import nn

import bench


@bench.register_variant(
    "tiny-cnn",
    description="conv 3x3 (width) -> BN -> ReLU -> pool -> conv 3x3 (2x width) -> BN -> ReLU -> global pool -> fc",
    origin="examples/my_variant, a worked example of a bench plugin",
    knobs={
        "width": bench.Knob(12, "channels of the first conv (the second has twice as many)", low=1),
        "dropout": bench.Knob(0.0, "dropout before the classifier", kind=float, low=0.0, high=1.0),
    },
    train_defaults={"optimizer": "sgd", "lr": 1e-2},
)
def tiny_cnn(shape: bench.InputShape, width: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(shape.channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size=3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, shape.num_classes),
    )
