"""facebench: reproducible training and benchmarking for four face-analysis papers."""

__version__ = "0.1.0"
