"""Causal tracing (ROME, section 2) and its heat maps."""
