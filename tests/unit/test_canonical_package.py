"""The package as a whole: pure (no q2c or I/O imports), every model frozen and strict."""

import subprocess
import sys

from pydantic import BaseModel

import canonical


def public_models() -> list[type[BaseModel]]:
    return [
        obj
        for name in canonical.__all__
        if isinstance(obj := getattr(canonical, name), type)
        and issubclass(obj, BaseModel)
        and obj is not canonical.CanonicalModel
    ]


def test_every_public_name_is_exported() -> None:
    assert len(set(canonical.__all__)) == len(canonical.__all__)
    for name in canonical.__all__:
        assert hasattr(canonical, name), name


def test_every_model_is_frozen_and_refuses_unknown_fields() -> None:
    models = public_models()
    assert len(models) >= 20
    for model in models:
        assert model.model_config.get("frozen") is True, model.__name__
        assert model.model_config.get("extra") == "forbid", model.__name__


def test_canonical_imports_nothing_of_q2c_and_does_no_io() -> None:
    probe = (
        "import sys, canonical; "
        "bad = {'connectors', 'activities', 'workflows', 'store', 'settings', 'service', "
        "'standins', 'devstack', 'cli', 'worker', 'httpx', 'sqlalchemy', 'sqlmodel', "
        "'temporalio'}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in bad))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
