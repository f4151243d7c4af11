"""Debug logging switched on by HETCL_DEBUG: 1 logs compiles and cache hits, 2 also prints the
rendered kernel sources. Messages go to stderr through the 'hetcl' logger."""
import logging
import os
import sys

logger = logging.getLogger("hetcl")


def debug_level():
    try:
        return int(os.environ.get("HETCL_DEBUG", "0") or 0)
    except ValueError:
        return 0


def _configure():
    if debug_level() > 0 and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("hetcl: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def debug(msg, *args, level=1):
    if debug_level() >= level:
        _configure()
        logger.debug(msg, *args)
