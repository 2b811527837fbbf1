"""Errors srx reports to users as one line.

Every error a user can cause (bad flag, unknown model, missing weights, corrupt file) is an
``SrxError``; the CLI prints ``error: <message>`` and exits with ``exit_code``. Anything else is a
bug and keeps its traceback (set ``SRX_DEBUG=1`` to see tracebacks for SrxErrors too).
"""

from __future__ import annotations


class SrxError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(SrxError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class OptionError(UsageError):
    """A bad value of a named setting (e.g. an ``UpscaleOptions`` field): the message starts with the field's
    name; the CLI reports it under the flag's name instead (``cli.common.user_message``)."""

    def __init__(self, field: str, detail: str):
        self.field, self.detail = field, detail
        super().__init__(f"{field} {detail}")


class UnknownModelError(UsageError):
    """A model name that is neither in the registry nor a model directory."""


class ManifestError(UsageError):
    """``weights_manifest.toml`` (or a model directory's ``srx_model.json``) is malformed."""


class WeightsMissingError(UsageError):
    """Weights are not in the local cache and cannot be fetched (offline, or manual download)."""


class WeightsIntegrityError(SrxError):
    """A weights file's sha256 differs from the pinned or recorded one; the file is not used."""

    exit_code = 2


class CheckpointFormatError(SrxError):
    """A checkpoint file does not have the layout its format promises."""

    exit_code = 2


class NumericalError(SrxError):
    """The model produced NaN/inf (for example an fp16 overflow)."""
