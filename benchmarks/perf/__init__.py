"""Performance benchmarks; outputs are committed to results/perf/."""
