"""The layers of the public API (``from hetcl.layers import Conv2D, ...``); they live in
hetcl/model/layers.py."""
from .model.layers import (Add, AvgPool2D, Conv2D, Dense, Flatten, GlobalAvgPool, Layer,
                           MaxPool2D, ReLU, Sigmoid)

__all__ = ["Add", "AvgPool2D", "Conv2D", "Dense", "Flatten", "GlobalAvgPool", "Layer",
           "MaxPool2D", "ReLU", "Sigmoid"]
