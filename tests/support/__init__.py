"""Shared test helpers, one module per concern."""
