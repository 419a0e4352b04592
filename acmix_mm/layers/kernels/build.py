"""Builds the C++ CPU kernel now rather than at first use: ``python -m acmix_mm.layers.kernels.build``.

Exits with status 1 where it cannot be built (the PyTorch fallback would then be used).
"""
import sys

from .cpu_extension import load_cpu_extension

if __name__ == '__main__':
    module = load_cpu_extension(verbose=True)  # shows the compiler's output
    print(f'acmix_mm C++ CPU kernel: {module.__file__ if module else "NOT available"}')
    sys.exit(0 if module else 1)
