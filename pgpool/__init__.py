"""pgpool: a drop-in replacement for pgpool-II 4.3, written in Python."""

# The pgpool-II release whose behaviour, formats and wire protocols we reproduce.
POOL_VERSION = "4.3.5"
POOL_CODENAME = "tamahomeboshi"
# This implementation's own release.
__version__ = "0.1.0"
