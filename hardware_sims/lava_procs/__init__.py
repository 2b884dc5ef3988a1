"""Lava processes defined by this project (Lava environment only).

They live in their own package because Lava's compiler imports every module of the package that
defines a process when it looks for process models; this package holds nothing else.
"""
