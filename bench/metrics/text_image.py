"""The streaming metrics of text-to-image cells: FID and CLIP score of the decoded images.

Each batch of final latents is decoded once by the VAE; the images stream into the Inception
Frechet accumulator (quantised to 8 bits like every FID in pasbench) and, with each sample's
prompt, into the CLIP score's running sums. Both sets of sums add across ranks.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from bench.metrics.frechet import Features, FrechetAccumulator, FrechetReference
from bench.metrics.inception import to_uint8


class TextImageAccumulator:
    """FID (the row's ``value``) and CLIP score (``clip_score``) of a text-to-image cell."""

    def __init__(self, denoiser: Any, features: Features, reference: FrechetReference,
                 clip: Any, device: torch.device | str = "cpu", blocks: int = 1) -> None:
        self.denoiser = denoiser
        self.fid = FrechetAccumulator(features, reference, device=device, blocks=blocks)
        self.clip = clip

    def update(self, samples: Tensor, class_labels: Tensor | None = None,
               seeds: Sequence[int] | None = None) -> None:
        """Add a batch of final latents of ``seeds`` with the one-hot prompt labels they were
        sampled with."""
        images = self.denoiser.decode(samples)
        self.fid.update(images, seeds=seeds)
        self.clip.update(to_uint8(images), self.denoiser.prompts_for(class_labels))

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`compute`."""
        return [*self.fid.sums(), *self.clip.sums()]

    def compute(self) -> float:
        return self.fid.compute()

    def extra_fields(self) -> dict[str, object]:
        return {**self.fid.extra_fields(), "clip_score": self.clip.compute()}
