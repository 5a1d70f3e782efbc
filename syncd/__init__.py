"""syncd: keeps Label Studio's annotations in cloud storage."""

__version__ = "0.1.0"
