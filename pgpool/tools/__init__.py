"""pgpool/tools package."""
