"""The CIFAR-2 chapter family of *Deep Learning with PyTorch* (Stevens, Antiga, Viehmann), ch. 8.

One configurable ``ChapterNet`` covers the book's Net, NetWidth, NetDropout,
NetBatchNorm, NetDepth and NetRes; ``ResDeepNet`` is NetResDeep. The L2 and weight
decay rows reuse the baseline with a training default, as the book does.
"""

from __future__ import annotations

import torch
from torch import nn

from ._registry import InputShape, Knob, register
from ._util import flat_features

ORIGIN = "Deep Learning with PyTorch, ch. 8 (CIFAR-2 airplane vs bird)"


class ChapterNet(nn.Module):
    """conv(width) -> conv(width/2) [-> conv(width/2) ...], each followed by act and 2x2 max-pool.

    ``residual`` adds each block's input to its activation from the third conv on,
    which is exactly NetRes for depth 3.
    """

    def __init__(
        self,
        shape: InputShape,
        width: int,
        depth: int,
        activation: str,
        batchnorm: bool,
        dropout: float,
        residual: bool,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        narrow = max(width // 2, 1)
        self.residual = residual
        self.blocks = nn.ModuleList()
        in_channels = shape.channels
        size = shape.size
        for i in range(depth):
            out_channels = width if i == 0 else narrow
            layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)]
            if batchnorm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(act())
            self.blocks.append(nn.Sequential(*layers))
            in_channels = out_channels
        # Pool after every conv while the map is still at least 2 pixels wide, so deep
        # variants stay valid on small images instead of pooling to nothing.
        self.pool_after = []
        for _ in range(depth):
            pool = size >= 2
            self.pool_after.append(pool)
            size = size // 2 if pool else size
        # The book drops out after the first two convs only (NetDropout).
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        flat = flat_features(self, shape, forward=self.features)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), act(), nn.Linear(hidden, shape.num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for i, (block, pool) in enumerate(zip(self.blocks, self.pool_after)):
            out = block(x)
            if self.residual and i >= 2:
                out = out + x
            x = nn.functional.max_pool2d(out, 2) if pool else out
            if i < 2:
                x = self.dropout(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResBlock(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU, plus the identity. Kaiming init, BN weight 0.5 as in the book."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(channels)
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
        nn.init.constant_(self.batch_norm.weight, 0.5)
        nn.init.zeros_(self.batch_norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.batch_norm(self.conv(x))) + x


class ResDeepNet(nn.Module):
    """conv -> ReLU -> pool -> n ResBlocks -> pool -> fc 32 -> fc classes (the book's NetResDeep).

    The book builds ``nn.Sequential(*(n_blocks * [ResBlock(...)]))``: one block object
    repeated, so all blocks share weights. ``shared_blocks=True`` reproduces that.
    """

    def __init__(self, shape: InputShape, width: int, depth: int, shared_blocks: bool, hidden: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(shape.channels, width, kernel_size=3, padding=1)
        if shared_blocks:
            block = ResBlock(width)
            self.resblocks = nn.Sequential(*(depth * [block]))
        else:
            self.resblocks = nn.Sequential(*(ResBlock(width) for _ in range(depth)))
        features = nn.Sequential(self.conv1, nn.ReLU(), nn.MaxPool2d(2), self.resblocks, nn.MaxPool2d(2), nn.Flatten())
        self.features = features
        self.head = nn.Sequential(
            nn.Linear(flat_features(features, shape), hidden), nn.ReLU(), nn.Linear(hidden, shape.num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _chapter_knobs(width: int, depth: int, dropout: float = 0.0, batchnorm: bool = False) -> dict[str, Knob]:
    return {
        "width": Knob(width, "channels of the first conv (n_chans1; later convs get half)", low=1),
        "depth": Knob(depth, "number of conv layers", low=1, high=16),
        "dropout": Knob(dropout, "Dropout2d probability after the first two convs", kind=float, low=0.0, high=1.0),
        "batchnorm": Knob(batchnorm, "BatchNorm2d after each conv", kind=bool),
    }


# The book trains every row with SGD lr 1e-2, batch 64, 100 epochs.
_BOOK_TRAINING = {"optimizer": "sgd", "lr": 1e-2}

_CHAPTER_ROWS = [
    # name, description, knobs, fixed, extra training defaults
    ("net", "baseline: conv 16, conv 8, tanh, max-pool, fc 512->32->2 (18,090 parameters)",
     _chapter_knobs(16, 2), {"activation": "tanh", "residual": False}, {}),
    ("net-width", "wider baseline: n_chans1=32 (38,386 parameters)",
     _chapter_knobs(32, 2), {"activation": "tanh", "residual": False}, {}),
    ("net-l2", "baseline with an explicit L2 penalty lambda*sum(w^2), lambda=0.001, added to the loss",
     _chapter_knobs(16, 2), {"activation": "tanh", "residual": False}, {"l2": 1e-3}),
    ("net-weight-decay", "baseline with SGD weight_decay=0.002 (the gradient of net-l2's penalty)",
     _chapter_knobs(16, 2), {"activation": "tanh", "residual": False}, {"weight_decay": 2e-3}),
    ("net-dropout", "n_chans1=32 with Dropout2d(p=0.4) after each conv block",
     _chapter_knobs(32, 2, dropout=0.4), {"activation": "tanh", "residual": False}, {}),
    ("net-batchnorm", "n_chans1=32 with BatchNorm2d after each conv",
     _chapter_knobs(32, 2, batchnorm=True), {"activation": "tanh", "residual": False}, {}),
    ("net-depth", "three convs with ReLU (n_chans1=32)",
     _chapter_knobs(32, 3), {"activation": "relu", "residual": False}, {}),
    ("net-res", "three convs with ReLU and a skip connection around the third",
     _chapter_knobs(32, 3), {"activation": "relu", "residual": True}, {}),
]


def _build_chapter_net(shape: InputShape, **kwargs) -> nn.Module:
    return ChapterNet(shape, **kwargs)


for _name, _description, _knobs, _fixed, _extra in _CHAPTER_ROWS:
    register(
        _name,
        description=_description,
        origin=ORIGIN,
        knobs=_knobs,
        fixed=_fixed,
        train_defaults={**_BOOK_TRAINING, **_extra},
    )(_build_chapter_net)


@register(
    "net-res-deep",
    description="n_chans1=32 with a stack of distinct ResBlocks (kaiming init, BN weight 0.5)",
    origin=ORIGIN + "; shared_blocks=true reproduces the book's weight-sharing bug",
    knobs={
        "width": Knob(32, "channels of the conv and every ResBlock", low=1),
        "depth": Knob(100, "number of ResBlocks", low=1, high=1000),
        "shared_blocks": Knob(False, "repeat ONE ResBlock object like the book's code (shared weights)", kind=bool),
    },
    train_defaults={"optimizer": "sgd", "lr": 3e-3},
)
def net_res_deep(shape: InputShape, width: int, depth: int, shared_blocks: bool) -> nn.Module:
    return ResDeepNet(shape, width, depth, shared_blocks)
