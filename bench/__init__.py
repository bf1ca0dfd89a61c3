"""Benchmarks: each module measures firsthop against a baseline in the same run and writes
``bench/results/<name>.json``. They are not tests; run them with ``make bench``."""
