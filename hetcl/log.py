"""Debug logging switched on by HETCL_DEBUG: 1 logs compiles and cache hits, 2 also prints the
rendered kernel sources. Messages go to stderr through the 'hetcl' logger."""
import logging
import sys

from .settings import debug_level  # (read by the modules that log)

logger = logging.getLogger("hetcl")




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
