"""Benchmark suite: asebytes_nodes against its peers (run ``python benchmarks/run.py``)."""
