"""From files on disk to frames, crops, pose tracks and labels: manifest, readers, synthetic data."""
