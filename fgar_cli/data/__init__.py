"""Data layer: dataset indexes, video reading, clip sampling, transforms, splits, synthetic data."""
