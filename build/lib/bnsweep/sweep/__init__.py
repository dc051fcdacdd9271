"""Sweeps: sweep files (spec), the stages run with Ray Tune (driver), the Ray trainable around
`train.fit` (trial) and where experiments live (storage). Ray is imported only when a sweep runs."""
