"""The project's error types: each says what is wrong, where, and what to do about it."""


class ThermVisionError(Exception):
    """Base class; `load_dataset` re-raises these unwrapped from `datasets`' generation errors."""


class MissingExtraError(ThermVisionError, ImportError):
    """An optional dependency the caller asked for is not installed; the message names the extra to install."""
