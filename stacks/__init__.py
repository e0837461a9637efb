"""Per-environment settings, their typed loader and the ClusterStack that composes the constructs."""
