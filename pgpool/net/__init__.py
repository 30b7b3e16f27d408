"""pgpool/net package."""
