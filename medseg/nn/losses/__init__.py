"""Focal, Dice and focal + Dice losses for lesion segmentation.

Definitions (Lin et al. 2017; ../DESIGN §3):

* Focal: ``FL = -a_t (1 - p_t)^g log(p_t)`` with ``p_t = p`` on positives and ``1 - p`` on
  negatives, ``a_t = a`` on positives and ``1 - a`` on negatives. ``g = 0, a = None`` is binary
  cross-entropy exactly. Softmax mode: ``p_t`` is the softmax probability of the true class and
  ``a_t`` the weight of that class (a scalar ``a`` weights every non-background class by ``a`` and
  background by ``1 - a``). Computed from logits with log-sigmoid / log-softmax.
* Soft Dice: ``1 - (2 sum(p y) + s_n) / (sum(p) + sum(y) + s_d)`` per channel, summed over the
  batch first when ``batch=True`` ("batch Dice", nnU-Net's default), else per sample and averaged.
  With ``s_n = 0`` a target without foreground gives loss 1 and gradient
  ``-2y/(..)`` = 0 w.r.t. the foreground terms: the patch teaches nothing through Dice (the focal
  term handles it) and produces no spurious gradient; with batch Dice such a patch only counts
  through the other samples of its batch.
* Compound: ``w_f * focal + w_d * dice`` with both terms on the same activation (sigmoid: one
  channel per lesion class; softmax: mutually exclusive classes incl. background).

Why focal is written here and not taken from MONAI: MONAI's ``DiceFocalLoss`` applies its
``sigmoid/softmax`` switch to the Dice term only (its focal term is always sigmoid, MONAI issue
8242), and ``FocalLoss(use_softmax=True, include_background=False)`` drops ``alpha`` (issue 8117).
The Dice term is MONAI's ``DiceLoss``, which is correct for both activations.
"""
