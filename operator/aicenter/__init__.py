"""aicenter-operator: a Kubernetes GPU operator for national-scale AI computing centres."""

__version__ = "0.1.0"
