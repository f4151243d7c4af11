"""What is trained, independent of devices: the graph of layers (graph.py), the layers and their
shapes (layers.py), the named models (models.py), the optimizers (optim.py) and the checks of what
the Python API is given (inputs.py). Layers bind to a device through engine/ops.py."""
