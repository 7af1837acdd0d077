"""Benchmark runner, evaluation, statistics, reports and performance scripts."""
