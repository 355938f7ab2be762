"""The paper's additional studies: checkpointing, stochastic depth, INT8, transfer, inference (benchmarks/README.md)."""
