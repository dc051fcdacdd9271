"""bnsweep: Ray Tune sweeps of adversarial training (which parameters must train for robustness?)."""

__version__ = "0.1.0"
