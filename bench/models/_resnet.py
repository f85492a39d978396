"""torchvision's ResNets as ``resnet-head`` (``transfer.py``) builds them: imported only when one is built."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
}
_ARCHITECTURES = {
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
}


def local_checkpoint(arch: str) -> Path:
    """Where torchvision would cache ``arch``'s ImageNet weights (``torch.hub`` checkpoints dir)."""
    filename = _WEIGHTS[arch].url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


class GreyToRGB(nn.Module):
    """ResNet stems take 3 channels; repeat a grey channel rather than retrain the stem."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1)


class ResNetBackbone(torchvision.models.ResNet):
    """torchvision's ResNet, except that batch-norm layers whose weights are frozen stay in eval mode.

    ``model.train()`` would otherwise switch them to batch statistics and keep updating their
    running means on CIFAR, so a "frozen" ImageNet backbone would drift under the head.
    """

    def train(self, mode: bool = True) -> ResNetBackbone:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d) and not any(p.requires_grad for p in module.parameters()):
                module.eval()
        return self


def resnet_backbone(arch: str) -> ResNetBackbone:
    return ResNetBackbone(*_ARCHITECTURES[arch])
