"""tether: Docker's container networking on the real Linux kernel."""

__version__ = "0.1.0"
# The Docker Engine API version whose shapes the daemon's API follows.
API_VERSION = "1.41"
