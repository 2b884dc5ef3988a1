"""The benchmarks: accuracy table, sparsity frontier, energy of the variants, speed, README tables.

An application-level package (it calls the library, the library never imports it), run from the
repository root as modules, e.g. ``python -m benchmarks.run_all`` (what ``make bench`` runs) or
``python -m benchmarks.accuracy_table --smoke``; ``docs/benchmarks.md`` describes each one.
"""
