"""Per-frame embeddings: computed once per (video, backbone, crop settings), cached on disk."""
