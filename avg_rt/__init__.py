"""avg-rt: multi-scale adversarial next-frame prediction, exported for fast inference."""

__version__ = "0.1.0"
