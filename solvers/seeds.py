"""Per-sample seeding: sample n always starts from the latent of seed n."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def latents_for_seeds(
    seeds: Sequence[int],
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    label_dim: int = 0,
) -> tuple[Tensor, Tensor | None]:
    """Standard-normal latents (and one-hot labels when ``label_dim``) for each seed.

    Drawn in float64 on the CPU from one generator per seed, then cast, so a sample does not
    depend on the batch it is in, the device, or the working precision's RNG path.
    """
    latents, labels = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        latents.append(torch.randn(tuple(shape), generator=gen, dtype=torch.float64))
        if label_dim:
            labels.append(torch.randint(label_dim, (1,), generator=gen))
    x = torch.stack(latents).to(device=device, dtype=dtype)
    if not label_dim:
        return x, None
    onehot = torch.nn.functional.one_hot(torch.cat(labels), label_dim).to(device=device, dtype=dtype)
    return x, onehot
