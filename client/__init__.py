"""Headless clients of the server's public protocols, for tests, benchmarks and evals."""
