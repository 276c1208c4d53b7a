"""selfinstruct: Self-Instruct (Wang et al., 2022) for real use."""

__version__ = "0.1.0"
