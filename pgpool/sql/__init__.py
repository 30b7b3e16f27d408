"""pgpool/sql package."""
