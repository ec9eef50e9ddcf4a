"""The named parts of each network family (:mod:`medseg.nn.registry`): its input layer and its
encoder, as patterns over the names of the network's tensors (``state_dict`` names).

* **input layer**: the convolutions that read the scan's channels (their weights are
  ``(out, in_channels, k, k, k)``): what :mod:`medseg.nn.transfer` adapts when a fine-tuned
  model has other input channels than its source.
* **encoder**: the contracting path down to and including the deepest level (nnU-Net's and
  MONAI's sense of the word); the rest (up-sampling path, skip merges, output and deep-supervision
  heads) is the decoder. ``train.freeze_encoder_epochs`` holds the encoder fixed.

==========  =======================================  ====================================================
family      input layer                              encoder
==========  =======================================  ====================================================
unet        ``model.0.*`` (first down block: its     ``model.0.*``, ``model.1.submodule.0.*``, ... (every
            convolution and residual convolution)    down block) and the bottom block at the innermost
                                                     ``submodule``
dynunet     ``input_block.*`` (conv1 and the         ``input_block.*``, ``downsamples.*``, ``bottleneck.*``
            residual conv3)
segresnet   ``encoder.conv_init.*``                  ``encoder.*``
==========  =======================================  ====================================================
"""

from __future__ import annotations

import re

import torch
from torch import nn

from medseg.errors import MedsegError

# MONAI UNet nests Sequential(down, SkipConnection(Sequential(down, ..., up)), up): after "model.", every
# "1.submodule." goes a level deeper; a down block is then "0.", the bottom block anything but "0."/"1."/"2."
INPUT_LAYER = {
    "unet": re.compile(r"^model\.0\."),
    "dynunet": re.compile(r"^input_block\."),
    "segresnet": re.compile(r"^encoder\.conv_init\."),
}
ENCODER = {
    "unet": re.compile(r"^model\.(?:1\.submodule\.)*(?:0\.|(?![012]\.))"),
    "dynunet": re.compile(r"^(?:input_block|downsamples|bottleneck)\."),
    "segresnet": re.compile(r"^encoder\."),
}


def _pattern(table: dict[str, re.Pattern], family: str, part: str) -> re.Pattern:
    if family not in table:
        raise MedsegError(f"model.name: {family!r} has no defined {part}; known: {', '.join(table)}")
    return table[family]


def named_tensors(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``net`` by its first name (a tensor shared by two modules,
    as DynUNet's ``skip_layers`` share the blocks', appears once)."""
    return dict(net.named_parameters()) | dict(net.named_buffers())


def input_layer_names(net: nn.Module, family: str, in_channels: int) -> set[str]:
    """Names of the input layer's weights (:data:`INPUT_LAYER`): convolution kernels of ``net``
    whose second axis holds the ``in_channels`` input channels.

    Raises:
        MedsegError: a family without a defined input layer.
    """
    pattern = _pattern(INPUT_LAYER, family, "input layer")
    return {
        name
        for name, t in named_tensors(net).items()
        if pattern.match(name) and t.dim() >= 3 and t.shape[1] == in_channels
    }


def encoder_parameters(net: nn.Module, family: str) -> dict[str, nn.Parameter]:
    """The encoder's parameters (:data:`ENCODER`) by name.

    Raises:
        MedsegError: a family without a defined encoder.
    """
    pattern = _pattern(ENCODER, family, "encoder")
    return {name: p for name, p in net.named_parameters() if pattern.match(name)}
