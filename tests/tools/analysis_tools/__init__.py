from .. import ROOT, load_tool  # noqa: F401
