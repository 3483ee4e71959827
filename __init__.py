"""mbr-bench: benchmark mouse behaviour recognition models on annotated videos."""

__version__ = "0.1.0"
