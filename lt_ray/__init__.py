"""lt-ray: Ray-distributed hyper-parameter studies for long-tailed recognition; the version."""

__version__ = "0.1.0"
