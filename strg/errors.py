"""Exceptions for bad user input. The CLI prints them as one clear message, without a traceback.

Every message names the file (and line, key or video id) and what is wrong with it.
"""


class StrgError(Exception):
    """Base class: an error caused by the user's input, not by a bug in strg."""


class ConfigError(StrgError, ValueError):
    """A config that does not validate: unknown key, wrong type, bad value."""


class DataError(StrgError, ValueError):
    """A data file that cannot be used: missing, corrupt, unparsable annotation, invalid box."""


class CheckpointError(StrgError, RuntimeError):
    """A checkpoint or weights file that cannot be loaded into the model at hand."""
