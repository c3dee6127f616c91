"""The errors voxline raises on purpose.

Every failure a user can cause or meet (bad audio, missing models, a provider that says no) is a subclass of
`VoxlineError`, so callers can catch one type and show its message as it is: the messages are written for people.
"""

from __future__ import annotations


class VoxlineError(Exception):
    """Base class of every error voxline raises on purpose."""


class AudioError(VoxlineError, ValueError):
    """Audio that cannot be used: wrong dtype, NaN samples, odd byte counts, impossible rates."""


class AudioDecodeError(AudioError):
    """A file or byte string that does not decode as audio (truncated, garbage, empty)."""


class UnsupportedFormatError(AudioError):
    """A container or codec voxline cannot read or write."""


class ModelError(VoxlineError):
    """A model that is missing, corrupt or cannot be fetched."""


class ModelNotFoundError(ModelError):
    """A model asked for by name that is not in the catalogue, or not pulled yet."""


class ChecksumError(ModelError):
    """A model file whose sha256 differs from the pinned one; the file has been removed."""


class RegistryUnreachableError(ModelError):
    """The package registry could not be reached to fetch a model package."""


class DiskFullError(ModelError):
    """No space left while writing a model file; the partial file has been removed."""


class ProviderError(VoxlineError):
    """A speech, language or voice provider failed.

    `retryable` tells resilience wrappers whether trying again may help (timeouts, 429, 5xx) or not (401, bad request).
    """

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after


class ConfigError(VoxlineError):
    """An agent configuration that is invalid or names something unknown."""
