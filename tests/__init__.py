"""nobat test suite."""
