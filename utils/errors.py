"""The one exception for a user's mistake, apart from bugs.

`BadInput` is raised for what the user can fix: a missing or unreadable file, a corrupt PNG,
weights of another model, a size or value out of range, a runtime this machine lacks. Its
message names the file or value and the fix; every command prints it as one line
`error: ...` and exits with status 2 (`utils.cli.guard`). Any other exception is a bug in the
suite and ends with a traceback and status 1, so a bug never looks like a user's mistake.

It subclasses ValueError so that code which validates a value may be caught as one; a
ValueError that is not a BadInput is never reported as bad input.
"""

from __future__ import annotations


class BadInput(ValueError):
    """A mistake in what the user gave (file, value, option, machine); the message says the fix."""
