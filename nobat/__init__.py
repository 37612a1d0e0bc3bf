"""Composition root: configuration, the command line, and the wiring that starts every part."""
