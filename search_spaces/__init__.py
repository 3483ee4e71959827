"""Search spaces for the temporal heads, as YAML files shipped with the package (one per head)."""
