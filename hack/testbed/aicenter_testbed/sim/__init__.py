"""Simulated GPU fleet on a real API server: kwok nodes, their Stage lifecycle and fault injection."""
