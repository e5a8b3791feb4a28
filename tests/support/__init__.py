"""Helpers shared by the tests, one module per concern (imported as ``support.<module>``)."""
