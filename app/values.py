"""How a setting's text becomes its value: one parser per kind of setting, each raising
ValueError with the reason (app/config.py turns it into the one line at start), and
the field declarations that attach a parser and a help text to a setting."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def ports(text: str) -> str:
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or not 0 < int(part) <= 65535:
            raise ValueError("must be comma-separated port numbers 1-65535")
    return text


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535 (0 disables the HTTP server)")
    return value


def kafka_name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be non-empty without whitespace")
    return text


def optional_name(text: str) -> str | None:
    return kafka_name(text) if text else None


def choice(*options: str) -> Callable[[str], str]:
    """Case-insensitive; the value takes the options' own case."""
    by_folded = {option.casefold(): option for option in options}

    def parse(text: str) -> str:
        if text.casefold() not in by_folded:
            raise ValueError(f"must be one of {', '.join(options)}")
        return by_folded[text.casefold()]
    return parse


def duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    value = float(number) * unit
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive duration: seconds, or a number with s, m, h or d")
    return value


def secret(help: str) -> Any:
    """Never shown in repr or logs; may also come from a file (``NAME_FILE``)."""
    return dataclasses.field(default=None, repr=False, metadata={
        "parse": str, "help": help + " (or a file: VARIABLE_FILE)", "env": "", "secret": True})


def setting(default: Any, parse: Callable[[str], Any], help: str, env: str = "") -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "help": help, "env": env})
