"""The reference program's training step in PyTorch, timed on this CPU (issue 9).

    python benchmarks/reference_torch_step.py [--reference-dir brain-segmentation-pytorch]

Prints one JSON line: {"images_per_second": ..., "source": ...}. It needs only torch
(and numpy): install it in the benchmark's own environment with
``pip install -r benchmarks/requirements-reference.txt``, never into tfseg's.

Without ``--reference-dir`` the network is written here from the published
description of the reference U-Net (Buda et al. 2019): two 3x3 convolutions without
bias, each followed by BatchNorm and ReLU, per block; four encoder levels of
``32 * 2**i`` filters with 2x2 max pooling; a 512-filter bottleneck; 2x2 transposed
convolutions with concatenated skips; a 1x1 convolution and a sigmoid. Loss: Dice with
smooth 1 over the whole batch; Adam 1e-4. With ``--reference-dir`` (a checkout of the
original program) its own ``unet.py`` and ``loss.py`` are timed instead.

Inputs are random tensors of the training shape: data loading is not part of the
reference's step, and random values cost a convolution exactly what images cost.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import torch
from torch import nn


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
    )


class ReferenceUNet(nn.Module):
    """The reference U-Net's shape (see the module docstring), base 32 by default."""

    def __init__(self, in_channels: int = 3, base: int = 32, levels: int = 4):
        super().__init__()
        widths = [base * 2 ** i for i in range(levels)]
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(double_conv(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-1], widths[-1] * 2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(w * 2, w, 2, stride=2) for w in reversed(widths))
        self.merge = nn.ModuleList(double_conv(w * 2, w) for w in reversed(widths))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return torch.sigmoid(self.head(x))


def dice_loss(pred, target, smooth: float = 1.0):
    """1 - Dice over the whole batch, smooth 1 (the reference's formulation)."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    intersection = (pred * target).sum()
    return 1.0 - (2.0 * intersection + smooth) / (pred.sum() + target.sum() + smooth)


def load_reference(reference_dir: str):
    """(model, loss) from the original program's unet.py and loss.py."""
    def module(name):
        path = os.path.join(reference_dir, f"{name}.py")
        if not os.path.isfile(path):
            raise SystemExit(f"--reference-dir {reference_dir}: no {name}.py there; give a checkout of the "
                             "reference program (brain-segmentation-pytorch).")
        spec = importlib.util.spec_from_file_location(f"reference_{name}", path)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return loaded

    return module("unet").UNet(in_channels=3, out_channels=1), module("loss").DiceLoss()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", help="checkout of the reference program: time its unet.py and loss.py")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: the core count, as the issue prescribes)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.reference_dir:
        model, loss_fn = load_reference(args.reference_dir)
        source = f"reference program ({args.reference_dir})"
    else:
        model, loss_fn = ReferenceUNet(base=args.base_filters), dice_loss
        source = "benchmark's own PyTorch U-Net (reference shape)"
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(args.batch_size, 3, args.size, args.size)
    masks = (torch.rand(args.batch_size, 1, args.size, args.size) > 0.9).float()

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(images), masks)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - started
    print(json.dumps({"images_per_second": args.steps * args.batch_size / seconds, "source": source,
                      "torch": torch.__version__, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
