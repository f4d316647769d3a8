"""The kopf operator: watches feed a cache, one scheduling loop decides and writes."""
