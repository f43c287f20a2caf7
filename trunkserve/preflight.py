"""``python -m trunkserve.preflight``: can this machine run the bundled tritonserver?

Run by ``make setup`` so a missing system library is reported once, with the
command that installs it, instead of as a stub crash at the first model load.
"""

from __future__ import annotations

import sys

from .launcher import LauncherError, command


def main() -> int:
    try:
        cmd, _ = command(["--help"])
    except LauncherError as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return 2
    print(f"preflight: OK ({cmd[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
