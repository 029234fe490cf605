"""CLIP score of generated images against their prompts, through transformers' CLIP.

CLIPScore(I, C) = max(100 cos(E_I, E_C), 0) per sample, averaged (Hessel et al. 2021), where
E_I and E_C are CLIP's projected image and text embeddings (``CLIPModel``'s ``image_embeds`` and
``text_embeds``; images go through the model's own ``CLIPProcessor``, prompts are truncated to
its 77 tokens). The default model is LAION's ViT-g/14 (laion2B-s12B-b42K), the weights the
reference toolbox scores with through open_clip, here in its transformers format, so the extra
needs no second model library. torchmetrics' ``CLIPScore`` wraps the same computation but breaks
on transformers 5 (it takes ``get_image_features`` for a tensor), hence these few lines.
The running sums (score, count) add across ranks like the FID moments.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from bench.errors import UserError
from bench.models.sd import INSTALL_HINT, hub_snapshot

CLIP_MODEL_ID = "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"
# Config, tokenizer and processor files and the transformers weights only (not open_clip's copy).
HUB_FILES = ["*.json", "*.txt", "model.safetensors"]


def clip_folder(source: str | None, cache_dir: Path | str) -> Path:
    """A local CLIP folder, or a Hub id (default: LAION's ViT-g/14) fetched into the cache."""
    if source is not None and Path(source).is_dir():
        return Path(source)
    return hub_snapshot(source or CLIP_MODEL_ID, cache_dir, HUB_FILES, option="--clip-model")


class CLIPScore:
    """Streaming CLIP score: :meth:`update` with 8-bit images and prompts, then :meth:`compute`."""

    def __init__(self, model, processor, device: torch.device | str = "cpu") -> None:
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        self.score = torch.zeros((), dtype=torch.float64, device=self.device)
        self.count = torch.zeros((), dtype=torch.float64, device=self.device)

    def scores(self, pixels: Tensor, prompts: list[str]) -> Tensor:
        """Per-sample scores, float64, of 8-bit images ``[B, 3, H, W]`` against ``prompts``."""
        inputs = self.processor(text=prompts, images=list(pixels.cpu()), return_tensors="pt",
                                padding=True, truncation=True)
        with torch.no_grad():
            out = self.model(**{key: value.to(self.device) for key, value in inputs.items()})
        image = torch.nn.functional.normalize(out.image_embeds.double(), dim=-1)
        text = torch.nn.functional.normalize(out.text_embeds.double(), dim=-1)
        return (100 * (image * text).sum(dim=-1)).clamp(min=0)

    def update(self, pixels: Tensor, prompts: list[str]) -> None:
        if len(prompts) != pixels.shape[0]:
            raise ValueError(f"{pixels.shape[0]} images but {len(prompts)} prompts")
        batch = self.scores(pixels, prompts)
        self.score += batch.sum()
        self.count += batch.numel()

    def sums(self) -> list[Tensor]:
        """The tensors to add across ranks (in place) before :meth:`compute`."""
        return [self.score, self.count]

    def compute(self) -> float:
        return float(self.score / self.count)


def load_clip_score(source: str | None, *, device: torch.device | str,
                    cache_dir: Path | str) -> CLIPScore:
    """A :class:`CLIPScore` over the CLIP model at ``source`` (folder or Hub id), on ``device``."""
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as err:
        raise UserError(f"the CLIP score needs the optional extra ({err.name} is missing): "
                        f"{INSTALL_HINT}") from None
    folder = clip_folder(source, cache_dir)
    try:
        model = CLIPModel.from_pretrained(folder)
        processor = CLIPProcessor.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load a CLIP model from {folder}: "
                        f"{str(err).splitlines()[0]}") from None
    return CLIPScore(model, processor, device)
