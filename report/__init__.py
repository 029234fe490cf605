"""pasbench report: tables, figures and an index page from stored benchmark rows.

Reads only what ``bench.run`` stored (``results/runs/*.jsonl`` plus preview ``.npz`` files); it
never imports ``bench``, ``pas`` or ``solvers``. Entry point: ``python -m report``.
"""
