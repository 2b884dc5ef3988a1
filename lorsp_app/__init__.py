"""The application floor: the ``lorsp`` command line and the end-to-end demo.

Imports only go down: ``lorsp_app`` → :mod:`hardware_sims` → :mod:`exporters` →
:mod:`lorsp_neuro` (``tests/test_architecture.py`` enforces it). Every module here parses, calls a
library function and formats its result; the work itself lives in the three packages below.
"""
