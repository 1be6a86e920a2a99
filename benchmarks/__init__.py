"""Speed, memory and accuracy benchmarks (run with ``python -m benchmarks run``; not part of the test suite)."""
