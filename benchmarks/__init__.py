"""Benchmark and study harnesses (run as scripts; importable so they can share `benchmarks.common`)."""
