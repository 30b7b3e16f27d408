"""pgpool/auth package."""
