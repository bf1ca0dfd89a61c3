"""Command-line entry points (``firsthop``, ``firsthopctl``, ``firsthop-scheduler``)."""
