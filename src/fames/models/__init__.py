"""Model zoo: ``create_model(name, num_classes=10, pretrained=None)``; every model takes images in [0, 1].

Registered: CIFAR ResNet-14/20/32/44/56 (akamaster weights), MLPerf Tiny ResNet-8 (Keras weights),
VGG-11/16/19-BN, SqueezeNet, MobileNetV2 (CIFAR variants) and ``digits_cnn`` (8x8 digits).
"""

from fames.models import cifar_resnet, digits, mobilenetv2, resnet8, squeezenet, vgg  # noqa: F401 (register)
from fames.models.layers import InputScale, Normalize, PadChannelShortcut, TFSamePad2d
from fames.models.registry import (
    CheckpointError,
    call_factory,
    create_model,
    list_models,
    load_checkpoint_file,
    load_state_dict_checked,
    model_spec,
    register_model,
    resolve_import,
    save_checkpoint,
)

__all__ = [
    "CheckpointError",
    "InputScale",
    "Normalize",
    "PadChannelShortcut",
    "TFSamePad2d",
    "call_factory",
    "create_model",
    "list_models",
    "load_checkpoint_file",
    "load_state_dict_checked",
    "model_spec",
    "register_model",
    "resolve_import",
    "save_checkpoint",
]
