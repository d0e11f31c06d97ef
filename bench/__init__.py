"""varsel's benchmarks: figures measured against baselines run side by side in the same run (see run.py)."""
