"""Errors a job raises for bad input (config, manifest, storage, resources): one base class, one exit code.

`raybind.cli.run_job` turns any `InputError` into its message on stderr and exit code 2, so a job never
needs its own handling for them.
"""


class InputError(ValueError):
    """The user's input cannot work: the message names what is wrong and, where it helps, how to fix it."""


class StorageError(InputError):
    """The run's storage cannot be written (fails before any training starts)."""


class ResourceError(InputError):
    """The cluster cannot give what the config asks for (a local cluster would otherwise wait forever)."""
