"""alertd: turns upstream failures into timely, throttled, privacy-safe alerts."""

__version__ = "1.0.0"
