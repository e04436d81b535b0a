"""`python -m service`: the q2c service on the configured host and port."""

from __future__ import annotations

import uvicorn

from service.app import create_app
from settings import load_settings


def main() -> None:
    settings = load_settings()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.service_port, log_level="info"
    )


if __name__ == "__main__":
    main()
