"""Real Kubernetes test bed: pinned tool builds and a local control plane with simulated GPU nodes."""
