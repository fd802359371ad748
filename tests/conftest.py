"""Test-wide settings. Set before JAX is imported by any test module."""

import os

# The suite runs tiny models where XLA's compile time dominates the run time;
# skipping most optimisations keeps it fast without changing results beyond
# float rounding. Export JAX_DISABLE_MOST_OPTIMIZATIONS=False to test optimised code.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'True')
