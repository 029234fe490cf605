"""Metrics: what turns samples into a number with an error bar.

- `frechet`: streamed first and second moments (per seed block), the Frechet distance and its
  leave-one-block-out jackknife standard error; the analytic datasets' exact data-space FD.
- `inception`: pytorch-fid's Inception pool features, the FID feature extractor.
- `reference`: FID reference statistics (mu, sigma) read and checked from a .npz file or URL.
- `clip_score`: CLIP score of images against their prompts; `text_image`: FID and CLIP together.
- `fid_ref`: ``python -m bench.metrics.fid_ref``, reference statistics of an image folder.
"""
