"""Data side of molml: readers, dataset registry, splits and the Lightning DataModule."""
