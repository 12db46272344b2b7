"""Filters for library log lines that are known and harmless, matched by exact logger and message,
so that every other warning stays visible.

- transformers checks MusicGen's composite config with its generic rule (special token ids below
  the vocabulary size), but MusicGen's decoder embeds ``vocab_size + 1`` codes and uses
  ``vocab_size`` as its pad / bos / decoder-start token (its own decoder config's check allows
  exactly that): three false alarms per MusicGen load. `quiet_musicgen_special_tokens` drops those
  three messages, with that one value, while a MusicGen config is built.
- Ray announces, on every local cluster it starts, that token authentication is on by default: it
  did the safe thing and there is nothing to do. `quiet_ray_token_auth_notice` drops that notice;
  Ray's warning that authentication is *disabled* is kept.

Light to import (standard library only).
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Callable, Iterator

TRANSFORMERS_CONFIG_LOGGER = "transformers.configuration_utils"
RAY_TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"

_MUSICGEN_TOKEN = re.compile(r"^Model config: (?:pad|bos|decoder_start)_token_id must be `None` or an integer within "
                             r"the vocabulary \(between 0 and (\d+)\), got (\d+)\. This may result in unexpected "
                             r"behavior\.$")
_RAY_TOKEN_AUTH_ON = re.compile(r"^Token authentication is enabled for this Ray cluster\. Set RAY_AUTH_MODE=disabled "
                                r"to opt out\.")


class DropMessages(logging.Filter):
    """Drops the records whose message ``drop(message)`` says to drop."""

    def __init__(self, drop: Callable[[str], bool]) -> None:
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.drop(record.getMessage())


def _musicgen_special_token(message: str) -> bool:
    """The generic check's alarm about MusicGen's special token, which is the vocabulary size itself."""
    match = _MUSICGEN_TOKEN.match(message)
    return match is not None and int(match.group(2)) == int(match.group(1)) + 1


@contextlib.contextmanager
def quiet_musicgen_special_tokens() -> Iterator[None]:
    """While building or loading a MusicGen (or MusicGen-Melody) config, drop its three false alarms."""
    logger = logging.getLogger(TRANSFORMERS_CONFIG_LOGGER)
    quiet = DropMessages(_musicgen_special_token)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


_RAY_FILTER = DropMessages(lambda message: _RAY_TOKEN_AUTH_ON.match(message) is not None)


def quiet_ray_token_auth_notice() -> None:
    """Drop Ray's "token authentication is enabled" notice in this process (idempotent)."""
    logger = logging.getLogger(RAY_TOKEN_AUTH_LOGGER)
    if _RAY_FILTER not in logger.filters:
        logger.addFilter(_RAY_FILTER)
