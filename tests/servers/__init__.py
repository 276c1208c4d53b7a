"""Real servers and model files that the tests run against (no mocks)."""
