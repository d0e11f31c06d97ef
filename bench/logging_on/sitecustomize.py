"""Put on PYTHONPATH by the benchmark (one dispatch run only) to give the root logger a handler at
VARSEL_LOG_LEVEL, so that the transition log lines varsel writes at INFO are really formatted and written: the
cost of the log, measured. varsel's commands configure only uvicorn's loggers, so without this nothing below
WARNING reaches any handler."""

import logging
import os

logging.basicConfig(
    level=os.environ.get("VARSEL_LOG_LEVEL", "info").upper(),
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
)
