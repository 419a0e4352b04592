"""Implementations of the sliding-window attention operator (see :mod:`.sliding_window_op`)."""
from .sliding_window_op import (BACKENDS, selected_backend, sliding_window_attention_flops,
                                sliding_window_attention_op)
from .sliding_window_python import sliding_window_attention_python

__all__ = ['BACKENDS', 'selected_backend', 'sliding_window_attention_flops',
           'sliding_window_attention_op', 'sliding_window_attention_python']
