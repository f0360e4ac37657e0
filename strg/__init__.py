"""strg: Videos as Space-Time Region Graphs (Wang & Gupta, ECCV 2018) in PyTorch."""

__version__ = "0.1.0"
