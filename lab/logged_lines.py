"""Short lines on the streams pulumi-command logs, so that no output of the lab's commands can hang `pulumi up`.

pulumi-command (v1.2.1, ``provider/pkg/provider/util`` ``LogOutput``) reads a command's logged streams, stdout and
stderr through one pipe, with a ``bufio.Scanner``: a line of 64 KiB or more stops it, nothing reads the pipe again,
the command blocks writing its output and the update hangs until cancelled. The lab's commands quote what the tools
they run say (the last line of a kind or docker error, a check's detail), which has no length limit, so each of them
folds the streams that the Pulumi program logs with :func:`folded`: no line they write is longer than ``WIDTH``
characters. Data that a caller parses (a kubeconfig, the verification's JSON report) is never logged and never
folded.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

SCANNER_LIMIT = 64 * 1024  # bytes before a newline that pulumi-command's reader cannot hold (bufio.MaxScanTokenSize)
# Characters per line. A character is at most 4 bytes in UTF-8, 10 as a backslash escape in an ASCII stream, and the
# unfinished lines of stdout and stderr can meet in one logged line: 2 x 2048 x 10 bytes stays well under the limit.
WIDTH = 2048


class FoldedLines:
    """A text stream that starts a new line before any line grows past `width` characters; nothing is dropped."""

    def __init__(self, stream: TextIO, width: int = WIDTH):
        self.stream = stream
        self.width = width
        self._column = 0  # characters written since the last newline

    def write(self, text: str) -> int:
        pieces = []
        for index, part in enumerate(text.split("\n")):  # only "\n" ends a line for the scanner
            if index:
                pieces.append("\n")
                self._column = 0
            while self._column + len(part) > self.width:
                room = self.width - self._column
                pieces += [part[:room], "\n"]
                part, self._column = part[room:], 0
            pieces.append(part)
            self._column += len(part)
        self.stream.write("".join(pieces))
        return len(text)

    def __getattr__(self, name: str):  # flush, fileno, encoding, isatty...: the wrapped stream's
        return getattr(self.stream, name)


@contextmanager
def folded(stdout: bool = True, stderr: bool = True) -> Iterator[None]:
    """Folds sys.stdout and/or sys.stderr until the block ends."""
    saved = sys.stdout, sys.stderr
    if stdout:
        sys.stdout = FoldedLines(sys.stdout)
    if stderr:
        sys.stderr = FoldedLines(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
