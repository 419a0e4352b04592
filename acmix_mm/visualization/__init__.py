from .curves import load_scalars, plot_curves
from .predictions import save_predictions

__all__ = ['load_scalars', 'plot_curves', 'save_predictions']
