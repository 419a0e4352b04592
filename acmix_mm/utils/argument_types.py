"""``type=`` functions for the tools' integer arguments (counts, sizes, threads).

argparse prefixes the message with the argument's name, so a bad value reads e.g.
``argument --repeat: must be a positive integer, got 0``; a value that is no integer at all reads
``... must be a positive integer, got 'two'``.
"""
import argparse


def _integer_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be {kind}, got {text!r}') from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f'must be {kind}, got {value}')
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer_at_least(text, 1, 'a positive integer')


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    return _integer_at_least(text, 0, 'a non-negative integer')
