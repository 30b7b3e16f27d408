"""pgpool/processes package."""
