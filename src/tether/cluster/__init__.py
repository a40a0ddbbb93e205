"""Multi-host: the cluster store (etcd), nodes, global networks and their endpoints."""
