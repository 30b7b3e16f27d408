"""pgpool/state package."""
