"""Stable Diffusion v1.5 (through diffusers) as an EDM-convention denoiser over its latents.

SD is an epsilon-prediction discrete-time VP model: 1,000 steps with alphas_cumprod abar_i from
its scheduler config (scaled-linear betas 0.00085..0.012). In EDM terms x = x_vp / sqrt(abar),
sigma_i = sqrt((1 - abar_i) / abar_i) and

    D(x, sigma, c) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma), c),

with t(sigma) interpolated linearly in log sigma between the model's 1,000 discrete sigmas (as
k-diffusion's discrete wrappers do), so sigma_min and sigma_max are the model's own.
Classifier-free guidance with scale w is D_u + w (D_c - D_u), computed as one UNet call over the
2B stacked unconditional and conditional inputs; w = 1 is the plain conditional model (one call
over B). The conditioning of a sample is its prompt, given as a one-hot row over the denoiser's
prompt table (``class_labels``, exactly like a class-conditional model's labels; see
bench.models.prompts for which caption each seed gets).

diffusers and transformers are the optional extra ``.[sd]``; importing this module needs neither.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.downloads import OFFLINE_ENV, cached_path, fetch, is_url
from bench.errors import UserError
from bench.models.prompts import PromptTable

SD_HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_MODEL_URL = f"https://huggingface.co/{SD_HUB_ID}"
SD_CKPT_URL = ("https://huggingface.co/runwayml/stable-diffusion-v1-5/resolve/main/"
               "v1-5-pruned-emaonly.ckpt")
INSTALL_HINT = "pip install -e '.[sd]'"
# The parts of the diffusers repository the benchmark loads (no safety checker, no fp16 copies).
HUB_FILES = ["model_index.json", "scheduler/*.json", "tokenizer/*", "text_encoder/config.json",
             "text_encoder/model.safetensors", "unet/config.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors"]
_PRECISION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Side of the decoded images kept in a cell's preview (a 512-px image per seed would be 3 MB).
THUMBNAIL = 64


def require_extra() -> None:
    """``UserError`` with the install command when diffusers/transformers are missing."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        raise UserError(f"Stable Diffusion needs the optional extra ({err.name} is missing): "
                        f"{INSTALL_HINT}") from None


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def hub_cache(cache_dir: Path | str) -> Path:
    """Where Hub snapshots (the SD repository, the CLIP-score model) land in the pasbench cache."""
    return Path(cache_dir) / "huggingface"


def hub_snapshot(repo_id: str, cache_dir: Path | str, patterns: list[str] | None = None,
                 option: str = "--model-path") -> Path:
    """A Hub repository's files in the pasbench cache (downloaded on first use, with progress
    bars; huggingface_hub writes each file under a temporary name and renames it when complete).
    Offline, or with PASBENCH_OFFLINE=1, a missing snapshot fails at once and says what to do
    (``option`` names the command-line option that takes a local folder instead)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = hub_cache(cache_dir)
    try:
        return Path(snapshot_download(repo_id, cache_dir=where, allow_patterns=patterns,
                                      local_files_only=offline()))
    except (LocalEntryNotFoundError, OSError, ValueError) as err:
        reason = f"{OFFLINE_ENV} is set" if offline() else str(err).splitlines()[0]
        raise UserError(f"cannot get {repo_id} from the Hugging Face Hub ({reason}); run once "
                        f"online to cache it under {where}, or pass a local folder with "
                        f"{option}") from None


@dataclass(frozen=True)
class LatentDiffusion:
    """The loaded parts of a Stable Diffusion pipeline, eval mode, on one device."""

    name: str
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    alphas_cumprod: Tensor  # float64, [num_train_timesteps]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def _parts_from_folder(folder: Path, dtype: torch.dtype) -> LatentDiffusion:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        load = {"dtype": dtype}
        return LatentDiffusion(
            name=folder.name,
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **load),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae", **load),
            text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **load),
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            alphas_cumprod=_alphas(DDIMScheduler.from_pretrained(folder, subfolder="scheduler")),
        )
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot load a Stable Diffusion pipeline from {folder} (need unet, vae, "
                        f"text_encoder, tokenizer, scheduler): {str(err).splitlines()[0]}") from None


def _parts_from_single_file(path: Path, dtype: torch.dtype, cache_dir: Path) -> LatentDiffusion:
    """The original LDM checkpoint (e.g. v1-5-pruned-emaonly.ckpt); diffusers converts it, with
    the component configs of the v1.5 repository (fetched once into the cache)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    config = hub_snapshot(SD_HUB_ID, cache_dir, [p for p in HUB_FILES if "safetensors" not in p])
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            path, config=str(config), dtype=dtype, load_safety_checker=False,
            local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise UserError(f"cannot load the Stable Diffusion checkpoint {path}: "
                        f"{str(err).splitlines()[0]}") from None
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return LatentDiffusion(path.stem, pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer,
                           _alphas(scheduler))


def _alphas(scheduler: Any) -> Tensor:
    return torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64).cpu()


def load_sd(
    source: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | str,
) -> LatentDiffusion:
    """SD's parts from a diffusers folder, a single checkpoint file (path or URL, fetched into the
    cache) or, by default, the v1.5 repository on the Hub. Networks run in ``dtype`` under
    "fp32", in half precision under "fp16"/"bf16" (solver states keep ``dtype``)."""
    require_extra()
    weights_dtype = _PRECISION_DTYPES.get(precision, dtype)
    if source is None:
        parts = _parts_from_folder(hub_snapshot(SD_HUB_ID, cache_dir, HUB_FILES), weights_dtype)
        parts = replace(parts, name="stable-diffusion-v1-5")
    else:
        path = fetch(str(source), cached_path(str(source), cache_dir)) if is_url(source) else Path(
            source)
        if path.is_dir():
            parts = _parts_from_folder(path, weights_dtype)
        elif path.is_file():
            parts = _parts_from_single_file(path, weights_dtype, Path(cache_dir))
        else:
            raise UserError(f"--model-path {path}: no such folder or file")
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for module in (parts.unet, parts.vae, parts.text_encoder):
        module.eval().requires_grad_(False).to(device)
    return parts


class SDDenoiser:
    """Stable Diffusion's UNet as a Denoiser over latents [B, 4, 64, 64] (see the module doc).

    ``class_labels`` are one-hot rows over ``prompts``; ``label_dim`` is the table's size.
    ``unet_evals_per_call`` is 2 with guidance (the batched 2B call), else 1.
    """

    def __init__(self, parts: LatentDiffusion, prompts: PromptTable, *, guidance: float,
                 dtype: torch.dtype = torch.float32, name: str | None = None) -> None:
        self.parts = parts
        self.prompts = prompts
        self.guidance = float(guidance)
        self.dtype = dtype
        self.device = parts.device
        config = parts.unet.config
        self.shape = (int(config.in_channels), int(config.sample_size), int(config.sample_size))
        self.label_dim = len(prompts)
        self.alphas_cumprod = parts.alphas_cumprod
        sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self._log_sigmas = sigmas.log().numpy()
        self.sigma_min, self.sigma_max = float(sigmas[0]), float(sigmas[-1])
        self.name = name or f"{parts.name}+cfg{self.guidance:g}+{prompts.source}"
        self._cached: tuple[tuple[int, ...], Tensor] | None = None
        self._empty: Tensor | None = None

    @property
    def guided(self) -> bool:
        return self.guidance != 1.0

    @property
    def unet_evals_per_call(self) -> int:
        return 2 if self.guided else 1

    # ----- conditioning -----------------------------------------------------------------------
    def labels_for_seeds(self, seeds: Sequence[int], *, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> Tensor:
        """One-hot rows selecting caption n for evaluation seed n."""
        index = torch.tensor([self.prompts.index_for_seed(s) for s in seeds], dtype=torch.long)
        return torch.nn.functional.one_hot(index, self.label_dim).to(device=device, dtype=dtype)

    def teacher_view(self) -> SDDenoiser:
        """The same model over PAS's teacher captions (disjoint from the evaluation captions)."""
        pool = self.prompts.teacher_pool()
        if pool is self.prompts:
            return self
        return SDDenoiser(self.parts, pool, guidance=self.guidance, dtype=self.dtype)

    def prompts_for(self, class_labels: Tensor) -> list[str]:
        return [self.prompts.prompts[i] for i in class_labels.argmax(dim=1).tolist()]

    def _encode(self, texts: list[str]) -> Tensor:
        tokenizer = self.parts.tokenizer
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return self.parts.text_encoder(ids.to(self.device))[0]

    def _conditions(self, class_labels: Tensor) -> Tensor:
        """Text embeddings of the batch's prompts; a solve asks for the same batch every step."""
        key = tuple(class_labels.argmax(dim=1).tolist())
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._encode(self.prompts_for(class_labels)))
        return self._cached[1]

    def _unconditional(self) -> Tensor:
        if self._empty is None:
            self._empty = self._encode([""])
        return self._empty

    # ----- the denoiser -----------------------------------------------------------------------
    def timestep(self, sigma: Tensor) -> Tensor:
        """t(sigma): linear in log sigma between the model's discrete sigmas (float64)."""
        log_sigma = sigma.detach().double().log().cpu().numpy()
        return torch.from_numpy(np.interp(log_sigma, self._log_sigmas,
                                          np.arange(len(self._log_sigmas), dtype=np.float64)))

    def eps(self, x_in: Tensor, t: Tensor, class_labels: Tensor) -> Tensor:
        """The (guided) noise prediction at UNet input ``x_in`` and timesteps ``t`` ([B])."""
        unet = self.parts.unet
        cond = self._conditions(class_labels)
        net_dtype = unet.dtype
        # The UNet embeds timesteps in float32 whatever its weights are (fp16 would round t to
        # 0.5 near t = 1000), so they go in as float32.
        t = t.to(x_in.device, torch.float32)
        if not self.guided:
            out = unet(x_in.to(net_dtype), t, encoder_hidden_states=cond).sample
            return out.to(x_in.dtype)
        batch = x_in.shape[0]
        text = torch.cat([self._unconditional().expand(batch, -1, -1), cond])
        both = unet(torch.cat([x_in, x_in]).to(net_dtype), t.repeat(2),
                    encoder_hidden_states=text).sample.to(x_in.dtype)
        eps_u, eps_c = both.chunk(2)
        return eps_u + self.guidance * (eps_c - eps_u)

    def __call__(self, x: Tensor, sigma: Tensor | float,
                 class_labels: Tensor | None = None) -> Tensor:
        if class_labels is None:
            raise ValueError(f"{self.name} is text-conditioned: pass one-hot prompt labels")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0])
        scale = (1 + sigma**2).rsqrt().view(-1, *[1] * (x.dim() - 1))
        eps = self.eps(x * scale, self.timestep(sigma), class_labels)
        return x - sigma.view_as(scale) * eps

    # ----- images -----------------------------------------------------------------------------
    def decode(self, latents: Tensor) -> Tensor:
        """Images in [-1, 1], [B, 3, H, W], of final sampler states (the VAE's scaling factor
        from its config; states at sigma_min are decoded as they are)."""
        vae = self.parts.vae
        with torch.no_grad():
            z = latents.to(self.device, vae.dtype) / vae.config.scaling_factor
            images = vae.decode(z).sample
        return images.float().clamp(-1, 1)

    def thumbnails(self, latents: Tensor, batch_size: int) -> Tensor:
        """Decoded images shrunk to THUMBNAIL px (area average), decoded ``batch_size`` at a time."""
        return torch.cat([
            torch.nn.functional.interpolate(self.decode(part), size=THUMBNAIL, mode="area").cpu()
            for part in latents.split(batch_size)])


def sigma_range(alphas_cumprod: Tensor) -> tuple[float, float]:
    """(sigma_min, sigma_max) of a discrete VP schedule."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    return (math.sqrt((1 - abar[0]) / abar[0]), math.sqrt((1 - abar[-1]) / abar[-1]))


def scaled_linear_alphas(start: float = 0.00085, end: float = 0.012, steps: int = 1000) -> Tensor:
    """SD's alphas_cumprod: betas linear in sqrt between ``start`` and ``end``."""
    betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)

