"""The user's-mistake exceptions: everything under :class:`UserError` means "fix your input or setup".

The command line (:func:`common.cli.run`) prints such an error as one line ``error: ...`` and exits with code 2;
any other exception is a bug (traceback, exit 3). This module imports nothing from ``common`` so that every layer
(config, data, tracking, registry, apps) can raise these without import cycles.

| class | raised when | also a |
|---|---|---|
| :class:`UserError` | base class: bad input, settings or state the user controls | ``Exception`` |
| :class:`DataError` | a dataset or input file does not match what the code expects | ``ValueError`` |
| :class:`ConfigError` | a ``--config`` file is unreadable, not an object, or has unknown keys | :class:`DataError` |
| :class:`DownloadError` | a dataset could not be downloaded or verified (offline, HTTP, checksum) | ``RuntimeError`` |

:class:`ConfigError` subclasses :class:`DataError` so that code written when ``DataError`` stood for every user
error (``except DataError`` around loading a config) keeps catching it.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "DownloadError", "UserError"]


class UserError(Exception):
    """The user's mistake (input, configuration, environment); the message says what to fix. CLI exit code 2."""


class DataError(UserError, ValueError):
    """A dataset does not match what the code expects; the message says where and why."""


class ConfigError(DataError):
    """A configuration file or value is unusable; the message names the file and the field."""


class DownloadError(UserError, RuntimeError):
    """A dataset could not be downloaded or verified; the message says how to place it by hand."""
