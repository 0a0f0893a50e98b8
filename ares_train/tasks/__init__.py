"""Controlled tasks whose every sentence has a known truth, for learning tests and benchmarks."""
