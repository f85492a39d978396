"""Transfer learning: a torchvision ResNet whose ``fc`` becomes Linear -> ReLU -> Linear.

Pretrained ImageNet weights are used only when torchvision's checkpoint file is
already in the torch hub cache; nothing is downloaded at build time, so tests and
offline machines get a randomly initialised backbone (and the log says so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ._registry import InputShape, Knob, register

log = logging.getLogger(__name__)

# torchvision (about a second to import) is imported by ``_resnet`` when a ResNet is built, not by every
# process that lists or trains another variant.
ARCHS = ("resnet18", "resnet50")


def local_checkpoint(arch: str) -> Path:
    """Where torchvision would cache ``arch``'s ImageNet weights (``torch.hub`` checkpoints dir)."""
    from ._resnet import local_checkpoint as cached_at

    return cached_at(arch)


@register(
    "resnet-head",
    description="torchvision ResNet (18 or 50) with fc replaced by Linear->ReLU->Linear",
    origin="seed transfer-learning notebook; ImageNet weights only if cached locally",
    knobs={
        "arch": Knob("resnet18", "backbone", kind=str, choices=ARCHS),
        "width": Knob(256, "hidden units of the new head", low=1),
        "pretrained": Knob(True, "load ImageNet weights if the checkpoint is cached locally", kind=bool),
        "freeze_backbone": Knob(True, "train only the head when pretrained weights were loaded", kind=bool),
    },
    train_defaults={"optimizer": "adam", "lr": 1e-3},
)
def resnet_head(shape: InputShape, arch: str, width: int, pretrained: bool, freeze_backbone: bool) -> nn.Module:
    from ._resnet import GreyToRGB, resnet_backbone

    backbone = resnet_backbone(arch)
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
        model: nn.Module = nn.Sequential(GreyToRGB(), backbone)
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
