"""Argument checks shared by the ACmix layers: clear errors instead of shape errors deep in torch."""


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'`{name}` must be a positive int, got {value!r}')
    return value


def check_odd_kernel(name: str, value: object) -> int:
    check_positive_int(name, value)
    if value % 2 == 0:  # type: ignore[operator]
        raise ValueError(f'`{name}` must be an odd positive int (1, 3, 5, 7, ...), got {value!r}')
    return value  # type: ignore[return-value]


def check_heads(channels_name: str, channels: int, heads: int) -> int:
    """Returns the head dimension ``channels // heads`` after checking that ``heads`` divides it."""
    check_positive_int(channels_name, channels)
    check_positive_int('heads', heads)
    if channels % heads:
        raise ValueError(f'`heads` ({heads}) must divide `{channels_name}` ({channels}); accepted '
                         f'values: {[h for h in range(1, channels + 1) if channels % h == 0]}')
    return channels // heads
