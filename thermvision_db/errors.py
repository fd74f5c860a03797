"""The project's error types: each says what is wrong, where, and what to do about it."""


class ThermVisionError(Exception):
    """Base class; `load_dataset` re-raises these unwrapped from `datasets`' generation errors."""
