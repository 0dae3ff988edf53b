"""coord: coordination recipes on the etcd v3 API, and a server that speaks it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
