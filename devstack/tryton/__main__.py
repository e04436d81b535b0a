"""`python -m devstack.tryton trytond|trytond-admin ARGS...`: Tryton's tools, run by q2c's
interpreter with q2c's Tryton module visible to them."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

from devstack.tryton.server import _TOOLS, Q2C_MODULE, Q2C_MODULE_PACKAGE

_MODULE_DISTRIBUTION = "q2c-trytond-module"


def _expose_q2c_module() -> None:
    """Declare q2c's module to trytond the way an installed module declares itself.

    trytond finds modules in its own package folder and through `trytond.modules` entry
    points. A distribution known to this process only carries that entry point: nothing
    is installed or written anywhere, and plain `trytond` stays as it was.
    """

    class ModuleDistribution(importlib.metadata.Distribution):
        def read_text(self, filename: str) -> str | None:
            if filename == "METADATA":
                return f"Metadata-Version: 2.1\nName: {_MODULE_DISTRIBUTION}\nVersion: 1\n"
            if filename == "entry_points.txt":
                return f"[trytond.modules]\n{Q2C_MODULE} = {Q2C_MODULE_PACKAGE}\n"
            return None

        def locate_file(self, path: str | os.PathLike[str]) -> Path:
            return Path(__file__).parent / path

    class ModuleFinder(importlib.metadata.DistributionFinder):
        def find_spec(self, *args: object, **kwargs: object) -> None:
            return None  # finds distributions, not imports

        def find_distributions(
            self, context: importlib.metadata.DistributionFinder.Context | None = None
        ) -> list[importlib.metadata.Distribution]:
            name = context.name if context is not None else None
            if name is None or name.replace("_", "-").lower() == _MODULE_DISTRIBUTION:
                return [ModuleDistribution()]
            return []

    sys.meta_path.append(ModuleFinder())


def _main(argv: list[str]) -> int:
    """`python -m devstack.tryton trytond|trytond-admin ARGS...`"""
    if len(argv) < 2 or argv[1] not in _TOOLS:
        print(f"usage: python -m devstack.tryton {{{'|'.join(_TOOLS)}}} ARGS...", file=sys.stderr)
        return 2
    tool = argv[1]
    _expose_q2c_module()
    module_name, _, function = _TOOLS[tool].partition(":")
    main = getattr(importlib.import_module(module_name), function)
    sys.argv = [tool, *argv[2:]]
    return int(main() or 0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
