"""Transfer learning: a torchvision ResNet whose ``fc`` becomes Linear -> ReLU -> Linear.

Pretrained ImageNet weights are used only when torchvision's checkpoint file is
already in the torch hub cache; nothing is downloaded at build time, so tests and
offline machines get a randomly initialised backbone (and the log says so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from ._registry import InputShape, Knob, register

log = logging.getLogger(__name__)

_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
}


def local_checkpoint(arch: str) -> Path:
    """Where torchvision would cache ``arch``'s ImageNet weights (``torch.hub`` checkpoints dir)."""
    filename = _WEIGHTS[arch].url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


class _GreyToRGB(nn.Module):
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


_ARCHITECTURES = {
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
}


@register(
    "resnet-head",
    description="torchvision ResNet (18 or 50) with fc replaced by Linear->ReLU->Linear",
    origin="seed transfer-learning notebook; ImageNet weights only if cached locally",
    knobs={
        "arch": Knob("resnet18", "backbone", kind=str, choices=tuple(_WEIGHTS)),
        "width": Knob(256, "hidden units of the new head", low=1),
        "pretrained": Knob(True, "load ImageNet weights if the checkpoint is cached locally", kind=bool),
        "freeze_backbone": Knob(True, "train only the head when pretrained weights were loaded", kind=bool),
    },
    train_defaults={"optimizer": "adam", "lr": 1e-3},
)
def resnet_head(shape: InputShape, arch: str, width: int, pretrained: bool, freeze_backbone: bool) -> nn.Module:
    backbone = ResNetBackbone(*_ARCHITECTURES[arch])
    checkpoint = local_checkpoint(arch)
    loaded = pretrained and checkpoint.is_file()
    if loaded:
        backbone.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
        log.info("resnet-head: loaded ImageNet weights from %s", checkpoint)
        weights = f"ImageNet weights loaded from {checkpoint}"
    elif pretrained:
        log.warning(
            "resnet-head: no cached ImageNet weights at %s; the %s backbone is RANDOMLY initialised", checkpoint, arch
        )
        weights = f"randomly initialised: no cached ImageNet weights at {checkpoint}"
    else:
        weights = "randomly initialised (pretrained=false)"
    frozen = loaded and freeze_backbone
    if frozen:
        for p in backbone.parameters():
            p.requires_grad_(False)
    backbone.fc = nn.Sequential(
        nn.Linear(backbone.fc.in_features, width), nn.ReLU(), nn.Linear(width, shape.num_classes)
    )
    if shape.channels == 1:
        model: nn.Module = nn.Sequential(_GreyToRGB(), backbone)
    else:
        model = backbone
        if shape.channels != 3:
            backbone.conv1 = nn.Conv2d(shape.channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # Read by the trainer and logged as bench.model.* tags: which weights this run really started from.
    model.bench_notes = {
        "weights": weights,
        "frozen": "backbone frozen, its batch norm in eval mode" if frozen else "nothing frozen",
    }
    return model
