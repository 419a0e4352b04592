"""Argument checks shared by the ACmix layers and backbones: clear errors instead of shape errors
deep in torch.

Every check takes the argument's name as the user spells it (``'num_heads'``,
``'acmix_cfg.heads'``) and raises an error that names it, repeats the value and says what is
accepted. A value of the wrong type raises :class:`ArgumentTypeError`, which is both a
``TypeError`` and a ``ValueError``; a value of the right type out of range a ``ValueError``.
Plain Python and PyTorch only (``acmix_mm.layers`` imports no OpenMMLab package).
"""
from numbers import Real
from typing import Any, Collection, Optional, Sequence, Tuple

import torch


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (caught by ``except TypeError`` and ``except ValueError``)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """An int (not a bool) in ``[minimum, maximum]``."""
    accepted = 'an int' + (f' >= {minimum}' if minimum is not None else '') + (
        f' and <= {maximum}' if maximum is not None else '')
    if not _is_int(value):
        raise ArgumentTypeError(f'`{name}` must be {accepted}, got {value!r} '
                                f'({type(value).__name__})')
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f'`{name}` must be {accepted}, got {value!r}')
    return value  # type: ignore[return-value]


def check_positive_int(name: str, value: object) -> int:
    """An int >= 1."""
    if not _is_int(value):
        raise ArgumentTypeError(f'`{name}` must be a positive int, got {value!r} '
                                f'({type(value).__name__})')
    if value < 1:  # type: ignore[operator]
        raise ValueError(f'`{name}` must be a positive int, got {value!r}')
    return value  # type: ignore[return-value]


def check_odd_kernel(name: str, value: object) -> int:
    """An odd int >= 1 (a kernel with a centre)."""
    check_positive_int(name, value)
    if value % 2 == 0:  # type: ignore[operator]
        raise ValueError(f'`{name}` must be an odd positive int (1, 3, 5, 7, ...), got {value!r}')
    return value  # type: ignore[return-value]


def check_bool(name: str, value: object) -> bool:
    """True or False (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f'`{name}` must be True or False, got {value!r} '
                                f'({type(value).__name__})')
    return value


def check_number(name: str, value: object, minimum: float, maximum: Optional[float] = None,
                 min_inclusive: bool = True) -> float:
    """A real number (not a bool) in ``[minimum, maximum]`` (``(minimum, ...`` when not
    ``min_inclusive``)."""
    low = '>=' if min_inclusive else '>'
    accepted = f'a number {low} {minimum}' + (f' and <= {maximum}' if maximum is not None else '')
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentTypeError(f'`{name}` must be {accepted}, got {value!r} '
                                f'({type(value).__name__})')
    below = value < minimum if min_inclusive else value <= minimum
    if below or (maximum is not None and value > maximum) or value != value:
        raise ValueError(f'`{name}` must be {accepted}, got {value!r}')
    return float(value)


def check_choice(name: str, value: object, choices: Collection[Any]) -> Any:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f'`{name}` must be one of {list(choices)}, got {value!r}')
    return value


def check_int_sequence(name: str, value: object, length: Optional[int] = None,
                       minimum: Optional[int] = None, length_of: str = '') -> Tuple[int, ...]:
    """A list or tuple of ints, each ``>= minimum``, of ``length`` entries when given.

    Args:
        length_of: what ``length`` is (e.g. ``'num_stages (4)'``), for the message.
    """
    what = 'a list or tuple of ints' + (f' >= {minimum}' if minimum is not None else '')
    if length is not None:
        what += f' with {length} entries' + (f', one per {length_of}' if length_of else '')
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        raise ArgumentTypeError(f'`{name}` must be {what}, got {value!r}')
    if length is not None and len(value) != length:
        raise ValueError(f'`{name}` must be {what}, got {len(value)} entries: {value!r}')
    if minimum is not None and any(v < minimum for v in value):
        raise ValueError(f'`{name}` must be {what}, got {value!r}')
    return tuple(value)


def check_indices(name: str, value: object, count: int, count_name: str) -> Tuple[int, ...]:
    """A non-empty list or tuple of distinct indices in ``range(count)``."""
    accepted = (f'a non-empty list or tuple of distinct ints in 0..{count - 1} '
                f'({count_name} is {count})')
    if isinstance(value, (list, tuple)) and len(value) and all(_is_int(v) for v in value):
        if all(0 <= v < count for v in value) and len(set(value)) == len(value):
            return tuple(value)
        raise ValueError(f'`{name}` must be {accepted}, got {value!r}')
    raise ArgumentTypeError(f'`{name}` must be {accepted}, got {value!r}')


def check_dict(name: str, value: object, accepted_keys: Optional[Collection[str]] = None,
               required_keys: Collection[str] = ()) -> dict:
    """A dict (None counts as empty) whose keys are among ``accepted_keys``."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ArgumentTypeError(f'`{name}` must be a dict, got {value!r} '
                                f'({type(value).__name__})')
    if accepted_keys is not None:
        unknown = sorted(set(value) - set(accepted_keys))
        if unknown:
            raise ValueError(f'unknown `{name}` keys {unknown}; accepted keys: '
                             f'{sorted(accepted_keys)}')
    missing = [k for k in required_keys if k not in value]
    if missing:
        raise ValueError(f'`{name}` must have the keys {list(required_keys)}, got {value!r}')
    return dict(value)


def check_heads(channels_name: str, channels: int, heads: int, heads_name: str = 'heads') -> int:
    """Returns the head dimension ``channels // heads`` after checking that ``heads`` divides it."""
    check_positive_int(channels_name, channels)
    check_positive_int(heads_name, heads)
    if channels % heads:
        raise ValueError(f'`{heads_name}` ({heads}) must divide `{channels_name}` ({channels}); '
                         f'accepted values: '
                         f'{[h for h in range(1, channels + 1) if channels % h == 0]}')
    return channels // heads


def check_input(owner: str, x: object, channels: int, rank: int = 4,
                layout: Sequence[str] = ('B', 'C', 'H', 'W')) -> torch.Tensor:
    """A floating-point tensor of shape ``layout`` with ``channels`` at ``C`` and ``B >= 1``.

    Args:
        owner: the module's name, for the message.
        layout: dimension names, ``'C'`` the channel one.
    """
    expected = '(' + ', '.join(str(channels) if d == 'C' else d for d in layout) + ')'
    if not isinstance(x, torch.Tensor):
        raise ArgumentTypeError(f'{owner} expects a tensor of shape {expected}, got '
                                f'{type(x).__name__}')
    if x.dim() != rank or x.shape[list(layout).index('C')] != channels:
        raise ValueError(f'{owner} expects input of shape {expected}, got {tuple(x.shape)}')
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f'{owner} expects a non-empty input of shape {expected} (B >= 1, every '
                         f'size >= 1), got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise ArgumentTypeError(f'{owner} expects a floating-point input of shape {expected} '
                                f'(float32, float64, float16 or bfloat16), got {x.dtype}')
    return x
