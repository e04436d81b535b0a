"""`python -m service`: the q2c service on the configured host and port."""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from settings import load_settings


def main() -> None:
    # uvicorn configures only its own loggers; q2c's delivery lines need the root one.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.service_port, log_level="info"
    )


if __name__ == "__main__":
    main()
