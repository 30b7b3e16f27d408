"""pgpool/proxy package."""
