"""Side-by-side benchmarks of asyncmongo against peer asyncio MongoDB drivers.

Run with ``python -m benchmarks.run``; see benchmarks/RESULTS.md for figures.
"""
