"""The corpus pipeline: generation settings and fingerprint, workers (ranks x shards), the resumable writer."""
