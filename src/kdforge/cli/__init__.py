"""`kdforge` command line: parse, call the Python API, turn input errors into one line and exit code 2."""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from kdforge.cli.commands import COMMANDS
from kdforge.cli.parser import build_parser
from kdforge.errors import KdforgeError

EXIT_INPUT_ERROR = 2
PROGRESS_EVERY_ENV = "KDFORGE_PROGRESS_EVERY"  # read by the runs' progress display (kdforge.engine.log)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (`compare x.yaml --seeds 5 train.epochs=3`), which argparse alone
    # does not allow for a positional list: collect the leftover key=value words as overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    os.environ[PROGRESS_EVERY_ENV] = f"{args.progress_every:g}"  # also reaches compare's worker processes
    try:
        COMMANDS[args.command](args)
    except KdforgeError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
