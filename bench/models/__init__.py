"""Models: the dataset registry and one module per model family, all behind one denoiser contract.

A dataset is a `bench.models.spec.DatasetSpec`: its shape, metric, defaults and a ``build`` that
returns a denoiser D(x, sigma[, labels]) in the EDM convention. `bench.models.registry` names
every spec; a new family is one new module here and one line in the registry.

- `analytic`: Gaussian mixtures with exact denoisers (gmm2d, digits, digits32), no download.
- `edm`: EDM's published networks (cifar10, ffhq, afhqv2, imagenet64); `checkpoints` loads them.
- `cm`: OpenAI's EDM-trained LSUN Bedroom 256 network (lsun_bedroom); `cm_network` rebuilds it.
- `ms_coco`: Stable Diffusion v1.5 on MS-COCO captions; `sd` wraps SD, `prompts` reads captions.
"""

from bench.models.registry import dataset_names, get_dataset, register

__all__ = ["dataset_names", "get_dataset", "register"]
