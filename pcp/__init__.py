"""pcp package."""
