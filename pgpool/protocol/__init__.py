"""pgpool/protocol package."""
