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


class Normalize(nn.Module):
    """``model`` applied to ``(x - mean) / std``: lets a logged model take [0, 1] pixels."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], model: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)
