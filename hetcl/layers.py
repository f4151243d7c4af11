"""The layers of the public API (``from hetcl.layers import Conv2D, ...``); they live in
hetcl/model/layers.py and hetcl/model/batchnorm.py."""
from .model.batchnorm import BatchNorm1D, BatchNorm2D
from .model.layers import (Add, AvgPool2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool,
                           Layer, MaxPool2D, ReLU, Sigmoid)

__all__ = ["Add", "AvgPool2D", "BatchNorm1D", "BatchNorm2D", "Conv2D", "Dense", "Dropout",
           "Flatten", "GlobalAvgPool", "Layer", "MaxPool2D", "ReLU", "Sigmoid"]
