from .demo_shapes import CLASSES, generate, render
from .demo_shapes_seg import DemoShapesSegDataset

__all__ = ['CLASSES', 'generate', 'render', 'DemoShapesSegDataset']
