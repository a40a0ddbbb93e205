"""Encrypted overlay networks: an authenticated userspace data path (tether-crypt) and the
keys it uses, shared through the cluster store.  docs/encryption.md has the whole story."""
