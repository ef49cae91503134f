"""Reproducible benchmarks for mcp-keygate; run `python -m bench` from the repository root."""
