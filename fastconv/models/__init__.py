"""The lecture's architectures as ``fastconv.nn`` graphs, He-initialised unless weights
are loaded (``model.load_weights(path.npz)``).

    model = fastconv.models.alexnet()
    fastconv.nn.print_summary(model, (1, 3, 227, 227))
    logits = model(x)
"""
from .alexnet import alexnet, zfnet
from .googlenet import googlenet
from .lenet import lenet5
from .resnet import resnet50
from .vgg import vgg16, vgg19

__all__ = ["lenet5", "alexnet", "zfnet", "vgg16", "vgg19", "googlenet", "resnet50"]
