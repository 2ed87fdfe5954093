"""Argparse helpers shared by the command-line scripts, and the one way they report bad input."""

from __future__ import annotations

import _thread
import argparse
import copy
import functools
import gc
import os
import re
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

from utils.errors import BadInput

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with status 2."""
    message = " ".join(str(message).split())
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of the finished frames an exception (and its cause or context)
    holds in its traceback, and collect what only they kept alive.

    A failed function's locals live on in the traceback until the exception is gone; when one of
    them is a tf.data iterator, its threads keep calling into Python while the interpreter shuts
    down, which aborts ("terminate called without an active exception") or hangs the process.
    Releasing them here stops the iterator (its destructor waits for the calls in flight) while
    Python still runs. Frames still executing (the caller's) are left as they are.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
    gc.collect()


def interrupted(hint: str | None = None) -> None:
    """Tell the user, on a line of its own, that the command stopped at their Ctrl-C.

    A live progress bar (tqdm, Keras' Progbar) leaves the cursor at the end of its line; in a
    terminal a line break comes first, so the message never trails the bar. `hint` says what
    was kept and how to go on (e.g. that rerunning the command resumes).
    """
    sys.stdout.flush()
    live = any(_is_terminal(stream) for stream in (sys.stdout, sys.stderr))
    message = "interrupted" + (f": {hint}" if hint else "")
    print(("\n" if live else "") + message, file=sys.stderr, flush=True)


def _is_terminal(stream: Any) -> bool:
    """Whether `stream` is an open terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def guard(
    main: Callable[..., Any] | None = None, *, on_interrupt: str | None = None
) -> Callable[..., Any]:
    """Run a CLI `main`, turning `utils.errors.BadInput` (the user's mistake) into `fail`.

    Library code raises BadInput with a message that names the value or path and the fix; this
    wrapper prints it as one line and exits with status 2. Any other exception, ValueError and
    OSError included, propagates (a traceback and status 1: a bug), but first, as before `fail`,
    the locals of the frames it unwound are released (`release_frames`), so no tf.data iterator
    outlives them.
    Ctrl-C prints `interrupted: ON_INTERRUPT` on its own line (`interrupted`) and exits with 130.

    Used as `@guard`, or as `@guard(on_interrupt="rerun the same command to continue")` by a
    command that can say what a rerun does after Ctrl-C.
    """
    if main is None:
        return functools.partial(guard, on_interrupt=on_interrupt)

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous_hook, finished = sys.unraisablehook, threading.Event()
        sys.unraisablehook = functools.partial(_raise_lost_interrupt, previous_hook, finished)
        try:
            return main(*args, **kwargs)
        except BadInput as exc:
            message = str(exc) or repr(exc)
            release_frames(exc)
            fail(message)
        except KeyboardInterrupt as exc:
            finished.set()
            release_frames(exc)
            interrupted(on_interrupt)
            raise SystemExit(130) from None
        except Exception as exc:
            release_frames(exc)
            raise
        finally:
            finished.set()
            sys.unraisablehook = previous_hook

    return wrapper


def _raise_lost_interrupt(
    previous_hook: Callable[[Any], None], finished: threading.Event, unraisable: Any
) -> None:
    """sys.unraisablehook of a guarded main: a Ctrl-C that landed in a weakref callback or a
    `__del__` (where Python can only print "Exception ignored in ...") is raised again in the
    main thread, unless the guard is `finished` by then, so the first Ctrl-C stops the command;
    anything else goes to `previous_hook`."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        # from another thread, a moment later: raised here, it would be lost in this hook too
        threading.Timer(0.05, lambda: finished.is_set() or _thread.interrupt_main()).start()
        return
    previous_hook(unraisable)


def parse_target_size(text: str) -> tuple[int, int]:
    """Parse `H,W` or `H,W,C` (the seed's form) into (H, W); C, when given, must be 3."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (2, 3) or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"target size must be H,W or H,W,C with positive integers, e.g. 1024,2048; got {text!r}"
        )
    if len(values) == 3 and values[2] != 3:
        raise argparse.ArgumentTypeError(f"images have 3 channels; got C={values[2]} in {text!r}")
    return values[0], values[1]


def _int_at_least(text: str, minimum: int) -> int:
    """An integer of at least `minimum`, or argparse's error naming the bound."""
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """Argparse type: an integer of at least 0."""
    return _int_at_least(text, 0)


def positive_int(text: str) -> int:
    """Argparse type: an integer of at least 1."""
    return _int_at_least(text, 1)


def non_negative_float(text: str) -> float:
    """Argparse type: a float of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def plain_value(value: Any, nargs: Any = None) -> str:
    """A default as a user would type it on the command line, never a Python repr.

    A pair such as a size is ``1024,2048``; the values of an option that takes several
    (`nargs` "+", "*" or a number) are separated by spaces, as they are typed, each pair among
    them still ``H,W``; other lists are comma lists (``onnxruntime,openvino``); a whole float
    loses its ``.0``; an empty list or string is ``none``.
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return ",".join(f"{key}={plain_value(item)}" for key, item in value.items()) or "none"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else list(value)
        several = nargs in ("+", "*") or isinstance(nargs, int)
        if several or any(isinstance(item, (list, tuple)) for item in items):
            return " ".join(plain_value(item) for item in items) or "none"
        return ",".join(plain_value(item) for item in items) or "none"
    text = str(value)
    return text if text else "none"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default in plain words (`plain_value`: ``1024,2048``, not
    ``(1024, 2048)``), 0 included, unless the help says it already or there is none (None, a
    flag that is off); lists the choices where a metavar hides them from the usage line; keeps
    the description's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.choices is not None
            and action.metavar is not None
            and "%(choices)" not in text
            and not isinstance(action, argparse._SubParsersAction)
            and not all(str(choice) in text for choice in action.choices)
        ):
            text += " (one of: %(choices)s)"
        if "default" in text or not _has_default(action):
            return text
        action = copy.copy(action)
        action.help = text
        return super()._get_help_string(action)

    def _expand_help(self, action: argparse.Action) -> str:
        if action.default is not None and action.default is not argparse.SUPPRESS:
            action = copy.copy(action)  # %(default)s in plain words, the parser's own untouched
            action.default = plain_value(action.default, action.nargs)
        return super()._expand_help(action)


def _has_default(action: argparse.Action) -> bool:
    """Whether `action` has a default worth showing: not None or SUPPRESS, and not the off
    state of a flag (store_true, store_false, store_const)."""
    if action.default is None or action.default is argparse.SUPPRESS:
        return False
    flags = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction)
    return not isinstance(action, flags)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors, its subcommands' included, are one line
    `error: ...` with status 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        fail(message)


def make_parser(description: str) -> Parser:
    """The parser every script starts from: one-line usage errors, help that shows defaults."""
    return Parser(description=description, formatter_class=HelpFormatter)


#: Start-up lines TensorFlow 2.21 writes to stderr from C++ before its logging is configured
#: (TF_CPP_MIN_LOG_LEVEL does not reach them): oneDNN and CUDA-stub notices on CPU machines.
_TF_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called|"
    r"[IW]\d{4} .*(port\.cc|cudart_stub\.cc|cpu_feature_guard\.cc)|"
    r"E\d{4} .*cuda_platform\.cc:\d+\] failed call to cuInit|"
    r"To enable the following instructions:)"
)
_tensorflow_ready = False


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter filtered out of stderr.

    The known notices (oneDNN on, no CUDA driver, CPU instruction sets) are dropped so that a
    CLI's `error: ...` line stands alone; anything else TensorFlow says is passed through.
    """
    global _tensorflow_ready
    if _tensorflow_ready:
        return
    _tensorflow_ready = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            # TensorFlow only on the paths that need it
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA initialisation logs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    kept = [
        line for line in text.splitlines() if line.strip() and not _TF_STARTUP_NOISE.match(line)
    ]
    if kept:
        print("\n".join(kept), file=sys.stderr)
