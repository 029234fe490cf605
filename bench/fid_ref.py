"""Old name of ``python -m bench.metrics.fid_ref``, kept so that existing commands still work."""
from bench.metrics.fid_ref import main

if __name__ == "__main__":
    raise SystemExit(main())
