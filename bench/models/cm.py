"""The consistency-models family: OpenAI's EDM-trained LSUN Bedroom 256 network (``lsun_bedroom``).

The network is ``edm_bedroom256_ema.pt`` from OpenAI's Consistency Models release, loaded by
``bench.models.checkpoints.load_cm`` and rebuilt by ``bench.models.cm_network``; the reference
toolbox (diff-solvers) and PAS sample it as ``lsun_bedroom``. Its FID reference is OpenAI's
published batch ``VIRTUAL_lsun_bedroom256.npz`` (guided-diffusion's evaluation suite), whose
``mu``/``sigma`` are pool_3 statistics of the TensorFlow FID Inception; the reference toolbox's
own ``lsun_bedroom-256x256.npz`` (collected online or made with EDM's ``fid.py``, says its
README; Google Drive only) describes other images and can be given with ``--ref-stats``.
"""

from __future__ import annotations

from bench.models.checkpoints import load_cm
from bench.models.edm import checkpoint_spec
from bench.models.spec import DatasetSpec

CM_BEDROOM_URL = "https://openaipublic.blob.core.windows.net/consistency/edm_bedroom256_ema.pt"
OPENAI_BEDROOM_REF_URL = (
    "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/lsun/bedroom/"
    "VIRTUAL_lsun_bedroom256.npz"
)

# Batch 16 as in the reference toolbox and PAS's run.sh (there it is also PAS's optimisation
# mini-batch).
CM_SPECS: list[DatasetSpec] = [
    checkpoint_spec(
        "lsun_bedroom",
        256,
        CM_BEDROOM_URL,
        OPENAI_BEDROOM_REF_URL,
        16,
        0,
        "LSUN Bedroom 256x256 unconditional, EDM-trained ADM UNet of OpenAI's Consistency Models",
        load_cm,
    ),
]
