"""Errors of the Ray engine (each prints as one line in the CLI)."""

from thermvision_db.schema.generated_corpus import CorpusError


class SharedStorageError(CorpusError):
    """A Ray node or actor cannot see the output folder the driver writes to."""


class RayEngineError(CorpusError):
    """Ray is missing, the cluster cannot host the actors, or an actor could not start."""
