"""mlops-runtime: the Open Inference Protocol model server, router and reference trainer."""

__version__ = "0.1.0"
