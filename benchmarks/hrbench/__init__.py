"""The benchmark's parts, one job per module; ``run.py`` and ``guard_restore.py`` use them.

Nothing here is imported by the package.  The pure parts (stats, targets, tables,
imports, results) are tested by tests/test_bench_*.py; the rest needs root and
network namespaces and runs only when a benchmark is run.
"""
