"""Other libraries' lines that say nothing to a glad user, kept out of its output."""

from __future__ import annotations

import contextlib
import logging


@contextlib.contextmanager
def no_random_init_warning():
    """Hide open_clip's "No pretrained weights loaded ... initialized randomly" warning where glad
    builds a model without weights on purpose: it loads them right after, or random weights
    were asked for."""
    logger = logging.getLogger()
    quiet = logging.Filter()
    quiet.filter = lambda record: "No pretrained weights loaded" not in record.getMessage()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
