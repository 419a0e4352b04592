import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # spec_reference

# Registers every module now: a test module that imports only the plain-PyTorch acmix_mm.layers
# first would otherwise leave the OpenMMLab registrations to whoever imports acmix_mm.models.
import acmix_mm  # noqa: E402,F401
