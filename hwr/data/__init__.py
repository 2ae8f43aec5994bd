"""Data: sources (download, cache, validate), fixed-shape keyed batches, pure per-sample augmentation."""
