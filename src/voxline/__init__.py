"""voxline: real-time voice agents, offline by default."""

__version__ = "0.1.0"
