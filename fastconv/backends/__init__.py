"""Kernel backends: one module per backend, same function names (see fastconv._registry)."""
