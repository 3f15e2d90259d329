"""The one exception type for user errors.

A :class:`VesselfieldError` means "the input is wrong", never "the code is wrong": its message is
one line that names the problem (and the file or key at fault). The CLI prints it as
``error: <message>`` and exits with status 2, without a traceback. Programming errors are left
as ordinary exceptions so that they stay visible.
"""


class VesselfieldError(ValueError):
    """A user-facing error: bad file, bad shape, bad value, incompatible inputs."""

    def __init__(self, message: str):
        # Keep it to one line whatever the caller passed.
        super().__init__(" ".join(str(message).split()))
