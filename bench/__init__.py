"""The benchmark: models, metrics, and the runner that grids them.

Three parts, in three places:

- ``bench.models``: the dataset registry and one module per model family (analytic mixtures,
  EDM, consistency models, Stable Diffusion), all behind one denoiser contract.
- ``bench.metrics``: Frechet moments and distance with seed-block error bars, Inception, CLIP
  score, FID reference statistics and ``python -m bench.metrics.fid_ref``.
- the runner, at this level: ``run`` (``python -m bench.run``), ``cli``, ``grids``, ``plan``,
  ``estimate``, ``methods`` (base, PAS, GITS, AMED), ``results``, ``compare``
  (``python -m bench.compare``), ``history``/``steps``/``verdict`` (``python -m bench.history``),
  ``backfill``, ``bisect``, ``timing``, ``progress``, ``distributed``, ``downloads``, ``errors``.

bench uses ``solvers``, ``pas``, ``gits`` and ``amed``; none of them imports bench
(tests/test_layout.py).
"""
