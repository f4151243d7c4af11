"""torch.nn definitions of hetcl's shipped models whose state_dict() names are those hetcl
writes and reads (hetcl/interop/torch_names.py), for moving weights between the two:

    model = torch_model("resnet20", (3, 32, 32), 10)
    model.load_state_dict(safetensors.torch.load_file("resnet20.safetensors"))  # from hetcl
    safetensors.torch.save_file(model.state_dict(), "back.safetensors")          # to hetcl

The Sequential models (lenet5, mlp, cifar-cnn, cifar-cnn-wide) become the nn.Sequential of the
same layers in the same order, built from hetcl's own definition (torch_sequential() does the
same for your own Sequential); resnet20 is CifarResNet, named as torchvision's ResNet and the
common CIFAR ports. Images are NCHW float32, as in hetcl.
"""
from torch import nn
from torch.nn import functional as F

from torch_twin import torch_module
from hetcl.model.models import build_model


def _module(layer):
    """The torch module of one layer of a Sequential (tools/torch_twin.py's, dropout kept)."""
    module = torch_module(layer, dropout=True)
    if module is None:
        raise TypeError(f"no torch module for {layer!r} in a Sequential")
    return module


def torch_sequential(model):
    """The nn.Sequential of a built hetcl Sequential: one module per layer, at its index."""
    return nn.Sequential(*(_module(node.layer) for node in model.nodes[1:]))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is x itself, or a
    strided 1x1 convolution + batch norm where the shape changes (as hetcl's resnet20)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al. 2016's CIFAR ResNet: conv16 + bn, three stages of `blocks` basic blocks (16,
    32, 64 filters; stages 2 and 3 start with stride 2), global average pooling, linear.
    blocks=3 is ResNet-20."""

    def __init__(self, in_channels=3, classes=10, blocks=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c_in, stages = 16, []
        for stage, width in enumerate((16, 32, 64)):
            stages.append(nn.Sequential(*(
                BasicBlock(c_in if block == 0 else width, width,
                           2 if stage and block == 0 else 1) for block in range(blocks))))
            c_in = width
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(x.mean(dim=(2, 3)))


def torch_model(name, input_shape, classes=10):
    """The torch.nn twin of hetcl's shipped model `name` (hetcl.model.models.MODELS) for
    images of input_shape (C, H, W) and `classes` classes, freshly initialised by torch."""
    if name == "resnet20":
        return CifarResNet(input_shape[0], classes, blocks=3)
    return torch_sequential(build_model(name, input_shape, classes))
