"""Benchmarks: run on purpose (``diffgym benchmark ...``), never in CI."""
