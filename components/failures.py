"""Turning a failed lifecycle command into the lab's one-sentence error instead of a Python traceback.

pulumi-command reports a failed command as `exit status N: running "<command>":` followed by its output; the SDK
raises that as a plain exception, which the Python host prints with a traceback. The lab's own commands end their
output with the sentence that matters (`error: ...` or `python -m verify: ...`), so that is what the user sees.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from typing import NoReturn

import pulumi

# The Python host's exit code for "the error was already shown to the user": the host adds no message of its own.
_ALREADY_REPORTED = 32

_PREFIXES = ("error: ", "python -m verify: ")


def last_sentence(output: str) -> str:
    """The lab's own error sentence in a failed command's output, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    # The SDK appends the failing input's name, as in "... (command)".
    lines = [re.sub(r" \(command\)$", "", line) for line in lines]
    for line in reversed(lines):
        for prefix in _PREFIXES:
            if prefix in line:
                return line[line.index(prefix) + len(prefix):]
    return lines[-1] if lines else "it printed nothing"


def fail_with_sentence(what: str) -> Callable[[Exception], NoReturn]:
    """For `Output.recover`: stop the update with `what` and the command's own sentence, no traceback."""

    def fail(error: Exception) -> NoReturn:
        if isinstance(error, pulumi.RunError):  # an earlier step's sentence, already said
            raise error
        raise pulumi.RunError(f"{what} failed: {last_sentence(str(error))}")

    return fail


def exit_quietly_when_cancelled() -> None:
    """End the program without a traceback when the language host interrupts it.

    When a resource fails, the engine stops the update and the Python host sends the program SIGINT (as on Ctrl-C);
    Python's default answer is a KeyboardInterrupt traceback through asyncio, printed after the resource's own
    sentence, which is the one that matters. The engine has already said why the update stopped, so exit at once.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread; the default stays
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(_ALREADY_REPORTED))
