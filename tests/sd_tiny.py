"""Test helper: a tiny random-weight Stable Diffusion pipeline and CLIP model, saved locally.

Everything is built from configs with seeded random weights and a made-up vocabulary, so the
SD tests run offline: a diffusers folder (unet, vae, text_encoder, tokenizer, scheduler) with
SD v1.5's scheduler settings, a transformers CLIP folder for the CLIP score, a captions CSV.
"""
from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
)

WORDS = ["a", "cat", "dog", "on", "the", "red", "blue", "table", "photo", "of", "sits", "bed"]
TOKENS = 16  # tokenizer length (SD's is 77)
LATENT = 8  # latent side (SD's is 64); the VAE doubles it


def make_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single characters plus a few whole words (no merges)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz.,":
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    for word in WORDS:
        vocab.setdefault(word + "</w>", len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                             model_max_length=TOKENS)


def _text_config(vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=2,
                          max_position_embeddings=TOKENS, bos_token_id=0, eos_token_id=1,
                          pad_token_id=1, projection_dim=8)


def write_pipeline(root: Path, seed: int = 0) -> Path:
    """A diffusers Stable Diffusion folder with tiny random networks; returns ``root``."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(
            sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
            attention_head_dim=2, norm_num_groups=4),
        vae=AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
            latent_channels=4, layers_per_block=1, norm_num_groups=4, sample_size=2 * LATENT),
        text_encoder=CLIPTextModel(_text_config(len(tokenizer))),
        tokenizer=tokenizer,
        # SD v1.5's scheduler settings (scaled-linear betas 0.00085..0.012, 1,000 steps).
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                                beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root)
    return root


def write_clip(root: Path, seed: int = 1) -> Path:
    """A transformers CLIP folder (model and processor) with tiny random weights."""
    torch.manual_seed(seed)
    tokenizer = make_tokenizer()
    config = CLIPConfig(
        text_config=_text_config(len(tokenizer)).to_dict(),
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 16,
                       "intermediate_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "projection_dim": 8},
        projection_dim=8)
    CLIPModel(config).save_pretrained(root)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(root)
    return root


def write_captions(path: Path, count: int) -> Path:
    """A CSV like the MS-COCO 30k file: image_id, id, caption (made-up captions)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "id", "caption"])
        for n in range(count):
            words = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(3 + n % 4)]
            writer.writerow([n, 1000 + n, " ".join(words)])
    return path
