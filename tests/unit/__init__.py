"""tests/unit package."""
