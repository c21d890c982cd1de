"""hongyan (鸿雁): an open-source SMS marketing platform."""

__version__ = "0.1.0"
