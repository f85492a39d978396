from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ._registry import InputShape


@torch.no_grad()
def flat_features(
    module: nn.Module, shape: InputShape, forward: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> int:
    """Width of the flattened output of ``forward`` (default: ``module``) for one image of ``shape``.

    Measured with a dummy forward pass so width/depth knobs never need a
    hand-computed flatten size. Eval mode: BatchNorm cannot train on a batch of one.
    """
    was_training = module.training
    module.eval()
    out = (forward or module)(torch.zeros(1, shape.channels, shape.size, shape.size))
    module.train(was_training)
    return out.flatten(1).shape[1]
