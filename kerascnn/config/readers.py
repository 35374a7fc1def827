"""Option values read from what a user typed or wrote: whole numbers,
numbers, booleans and their words, names, sizes. `READERS[kind]` reads one
kind of value (TypeError or ValueError when it is not one), `EXPECTS[kind]`
says what was expected, `range_text` a field's range (FitConfig's metadata)."""

import math
from pathlib import Path


def range_text(meta):
    low, high = meta.get("low"), meta.get("high")
    if high is None:
        return "positive" if low == 0 and meta.get("open_low") else f"at least {low}"
    left, right = "(" if meta.get("open_low") else "[", ")" if meta.get("open_high") else "]"
    return f"in {left}{low}, {high}{right}"


def read_int(value):
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float) and not value.is_integer():
        raise ValueError
    return int(value)


def read_float(value):
    if isinstance(value, bool):
        raise TypeError
    value = float(value)
    if not math.isfinite(value):
        raise ValueError
    return value


BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def read_bool(value):
    """A bool, or its word as typed (`--vary batchnorm=true,false`)."""
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    if not isinstance(value, bool):
        raise TypeError
    return value


def read_text(value):
    if not isinstance(value, str):
        raise TypeError
    return value


def read_names(value):
    """"a,b" or ["a", "b,c"] -> ("a", "b", "c")."""
    if isinstance(value, str):
        value = [value]
    return tuple(item.strip() for part in value for item in str(part).split(",") if item.strip())


def read_ints(value):
    """"16,32", [16, 32] or 4096 -> a tuple of whole numbers."""
    if isinstance(value, (int, float, bool)):
        value = [value]
    return tuple(read_int(v) for v in (read_names(value) if isinstance(value, str) else value))


def read_size(value):
    """A fraction below 1 or a whole count."""
    number = read_float(value)
    if number < 0 or (number >= 1 and not number.is_integer()):
        raise ValueError
    return number if number < 1 else int(number)


READERS = {
    "choice": read_text, "str": read_text, "path": lambda v: str(v) if isinstance(v, (str, Path)) else read_text(v),
    "int": read_int, "float": read_float, "bool": read_bool, "flag": read_bool, "size": read_size,
    "names": read_names, "ints": read_ints,
}

EXPECTS = {
    "choice": "a name", "str": "text", "path": "a path", "int": "a whole number", "float": "a number",
    "bool": "true or false", "flag": "true or false", "size": "a fraction below 1 or a whole count such as 5000",
    "names": "names", "ints": "whole numbers such as 16,32",
}
