"""The base layer: errors, registries, file identity and safe writes, process identity.

Everything else in mbr-bench may import from here; nothing here imports the rest of the project.
"""
