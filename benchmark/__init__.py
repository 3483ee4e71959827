"""The harness: datasets, backbones, embedding cache, and (next) heads, searches and leaderboards."""
