"""Moved to tether.model (the CNM objects are imported downward by every layer)."""

from tether.model import *  # noqa: F403
