"""Forward hooks that give AMED the bottleneck features of EDM and consistency-models UNets.

``BottleneckFeatures(denoiser)`` is a features callable for ``amed.fit``/``amed.sample``: a hook
on the network's bottleneck keeps the pooled output (amed.features.pool_map) of every forward
call, and a read returns the samples of the latest call(s) on a batch of x's size. AMED reads
right after its first denoiser call of each step, so the features cost no extra evaluation, and
a denoiser that splits a batch into chunks still yields the whole batch. The hook returns
nothing, so the network's output is unchanged. Remove it (``remove()`` or ``with``) when done.
"""

from __future__ import annotations

from typing import Self

import torch
from torch import Tensor, nn

from amed.features import pool_map


def bottleneck_module(net: nn.Module) -> nn.Module:
    """The block AMED reads, as the official code hooks it: the last block of an EDM UNet's
    encoder (``model.enc``: SongUNet's 8x8_block3 on CIFAR-10, DhariwalUNet's 8x8_block2 on
    ImageNet-64), or a consistency-models UNet's ``model.middle_block`` (the 256 px models)."""
    model = getattr(net, "model", None)
    enc = getattr(model, "enc", None)
    if isinstance(enc, nn.ModuleDict) and len(enc):
        return list(enc.values())[-1]
    middle = getattr(model, "middle_block", None)
    if isinstance(middle, nn.Module):
        return middle
    raise ValueError(
        f"{type(net).__name__} has no EDM encoder (model.enc) or UNet middle block "
        "(model.middle_block) to read AMED's bottleneck features from"
    )


class BottleneckFeatures:
    """features(x, sigma) -> [B, 64]: the pooled bottleneck of the latest call on B samples."""

    name = "bottleneck"

    def __init__(self, denoiser) -> None:
        self.captured: list[Tensor] = []
        module = bottleneck_module(getattr(denoiser, "net", denoiser))
        self.handle = module.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self.captured.append(pool_map(output.detach().float()))

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        size = sum(len(c) for c in self.captured)
        if size < x.shape[0]:
            raise RuntimeError(
                f"the bottleneck saw {size} samples since the last read, fewer than the batch of "
                f"{x.shape[0]}: call the denoiser on x before reading its features"
            )
        features = torch.cat(self.captured)[-x.shape[0] :]
        self.captured.clear()
        return features.to(x.dtype)

    def remove(self) -> None:
        """Detach the hook; the network is as before."""
        self.handle.remove()
        self.captured.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
