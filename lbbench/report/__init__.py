"""Reports from a results directory alone (framework-free)."""
