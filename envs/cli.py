"""The exit codes of every command of the project, in one place.

``run_command`` runs a command's work and turns its outcome into the exit code the README documents:

- 0: done; the result, if any, is printed as one JSON line on stdout;
- 2 (:data:`EXIT_BAD_INPUT`): bad input (``ValueError``, ``FileNotFoundError``, and what the
  command adds), with ``error: ...`` on stderr and nothing half written;
- 3 (:data:`EXIT_FAULT`): a fault of the bench (the command's ``faults``: the robot is stopped),
  with what to do next;
- 130 (:data:`EXIT_INTERRUPTED`): Ctrl-C.

An exception's notes (e.g. where an interrupted record was saved) are printed with it, and a
resumable command adds a ``hint`` (how much is on disk, how to continue) to the last three.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT, EXIT_FAULT, EXIT_INTERRUPTED = 2, 3, 130
BAD_INPUT: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def _explain(first: str, e: BaseException, hint: str | None) -> None:
    print("\n".join([first, *getattr(e, "__notes__", []), *([hint] if hint else [])]), file=sys.stderr)


def run_command(body: Callable[[], Any], *, faults: tuple[type[BaseException], ...] = (),
                fault_message: Callable[[BaseException], str] = lambda e: f"stopped: {e}",
                bad_input: tuple[type[BaseException], ...] = (),
                hint: Callable[[int], str | None] = lambda code: None) -> int:
    """Run ``body`` and return the command's exit code; ``body``'s result (unless None) is printed as
    JSON. ``bad_input`` adds to :data:`BAD_INPUT`; ``hint(code)`` is printed after an error."""
    try:
        result = body()
    except BAD_INPUT + bad_input as e:
        _explain(f"error: {e}", e, hint(EXIT_BAD_INPUT))
        return EXIT_BAD_INPUT
    except faults as e:
        _explain(fault_message(e), e, hint(EXIT_FAULT))
        return EXIT_FAULT
    except KeyboardInterrupt as e:
        _explain("\ninterrupted", e, hint(EXIT_INTERRUPTED))
        return EXIT_INTERRUPTED
    if result is not None:
        print(json.dumps(result))
    return 0
