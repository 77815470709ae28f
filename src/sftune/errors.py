"""User-facing errors.

Anything the user can fix (a path, a field, a name) raises :class:`SftuneError`
with a one-line message that names the culprit and the fix. The CLI prints it
without a traceback and exits with status 2.
"""

from __future__ import annotations


class SftuneError(Exception):
    """A problem with the user's input (data, config, names), not a bug."""

    exit_code = 2

    def __init__(self, message: str = "", *args: object) -> None:
        message = str(message)
        # torch's DataLoader re-raises a worker's exception as type(e)("Caught ... in DataLoader worker
        # process N.\nOriginal Traceback ...\nsftune.errors.SftuneError: <message>"): keep the one line.
        if message.startswith("Caught ") and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].split("SftuneError: ", 1)[-1]
        # One line whatever user input it quotes (a --set value, a file name holding a newline).
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message, *args)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
