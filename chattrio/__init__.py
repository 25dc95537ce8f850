"""chattrio: a horizontally scalable, fault-tolerant real-time chat on Trio."""

__version__ = "0.1.0"
