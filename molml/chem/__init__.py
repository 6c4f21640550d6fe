"""RDKit side of molml: parsing, standardization, graph featurizers and fingerprints."""
