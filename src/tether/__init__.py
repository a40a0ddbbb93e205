"""tether: Docker's container networking on the real Linux kernel."""

__version__ = "0.1.0"
# The Engine API versions whose shapes the daemon serves (the newest is the default, as
# dockerd's); a request for another version is refused with dockerd's 400.
API_VERSION = "1.47"
MIN_API_VERSION = "1.24"
