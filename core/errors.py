"""Errors a user can act on. The CLI prints them as one line and exits 2; anything else is a bug."""


class MbrError(Exception):
    """Base class: the message names the file (or component), the problem and the fix."""

    exit_code = 2


class DataError(MbrError):
    """A dataset, video, pose or labels file is missing, malformed or inconsistent."""


class ConfigError(MbrError):
    """A command-line option or a setting in dataset.yaml has a value that cannot work."""


class UnknownComponentError(MbrError, KeyError):
    """A backbone or head name that is not registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return self.args[0]


class DuplicateComponentError(MbrError, KeyError):
    """A second component registered under a name already taken."""

    def __str__(self) -> str:
        return self.args[0]


class WeightsError(MbrError):
    """Backbone weights that cannot be downloaded or loaded."""


class TimeBudgetReached(Exception):
    """`--timeout` ran out in the middle of a trial: the trial stops at an epoch's end and is handed back."""


class CacheError(MbrError):
    """The embedding cache cannot be written (permissions, disk full)."""
