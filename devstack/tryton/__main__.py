"""`python -m devstack.tryton trytond|trytond-admin ARGS...`: Tryton's tools, run by the
interpreter running q2c, so they see its virtualenv.

q2c's Tryton module reaches trytond through the `trytond.modules` entry point that q2c's
distribution declares (pyproject.toml), as any installed module does: nothing is added
here. Running the tools through this module rather than the `trytond` script keeps them
on q2c's interpreter whatever `PATH` says.
"""

from __future__ import annotations

import importlib
import sys

from devstack.tryton.server import _TOOLS


def _main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in _TOOLS:
        print(f"usage: python -m devstack.tryton {{{'|'.join(_TOOLS)}}} ARGS...", file=sys.stderr)
        return 2
    tool = argv[1]
    module_name, _, function = _TOOLS[tool].partition(":")
    main = getattr(importlib.import_module(module_name), function)
    sys.argv = [tool, *argv[2:]]
    return int(main() or 0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
