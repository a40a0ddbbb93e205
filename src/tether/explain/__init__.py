"""Troubleshooting: explain (reachability verdicts and their reasons), doctor (drift between
the store and the kernel), and the kernel view of inspect --verbose."""
