"""BERT-style masked modelling for every isotropic backbone (SimMIM, arXiv 2111.09886).

The reconstruction pretext task of Cazenavette & Lucey (arXiv 2105.14077): masked patch
embeddings are replaced by a learned mask token, *all* tokens go through the backbone (so
attention, local attention, MLP, conv and pooling mixers all work), and a linear head
reconstructs the masked patches' pixels.
"""

from __future__ import annotations

import torch
from lightly.models.utils import get_at_index, patchify, unpatchify
from timm.layers import trunc_normal_
from torch import Tensor, nn

from ssl_biases.backbones.mixers import TOKEN_MIXERS
from ssl_biases.backbones.pos_embed import NoPosEmbed
from ssl_biases.methods.base import DEFAULT_TRAINING
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.reconstruction import MaskedReconstruction, patchify_count
from ssl_biases.methods.training import Training


class MaskedModeling(MaskedReconstruction):
    """Masked patch modelling with a learned mask token and a linear pixel head (SimMIM).

    Before the stem, the masked patches' pixels are set to 0 (the dataset mean), so stems that
    overlap neighbouring patches (``stem='overlap'`` or ``'conv'``) cannot read a masked patch
    through its visible neighbours; after the stem, the masked patches' embeddings are
    replaced by the learned mask token; the position embedding is added to every token inside
    ``forward_tokens``. The loss is the MSE on the masked patches only (SimMIM uses L1; the
    paper reports both work about equally).

    Global attention without a position embedding (``token_mixer='attention'``,
    ``pos_embed='none'``, any pooling) is refused with a ``ValueError``: that network is
    permutation-equivariant over the patch tokens and every mask token enters it with the same
    vector, so every masked patch gets the same prediction and the task cannot test anything.
    The ``identity`` mixer without a position embedding is refused the same way: each output
    token depends on its own input token only, so every mask token's output is the same.
    Every other mixer sees position without an embedding (``local_attention`` through its
    window, ``mlp`` through its position-specific token weights, ``conv`` through its kernel,
    ``pool`` through its neighbourhood), so those cells stay. We refuse rather than make the
    mask token position-aware: that would hand position to a net whose missing position
    embedding is the bias under study, so the cell would no longer be what its label says.

    The online probe trains on the unmasked view's embedding (an extra no-grad forward,
    :meth:`~ssl_biases.methods.reconstruction.MaskedReconstruction.probe_features`, about
    +29 % of a step at CPU scale), as it is tested on unmasked images.

    Args:
        backbone: An isotropic patch backbone (IsotropicNet, any ``token_mixer``).
        mask_ratio: Fraction of the patches that are masked (0.6 in SimMIM; BERT uses 0.15).
        norm_pix_loss: Reconstruct per-patch normalised pixels.
        min_scale: Smallest random-resized-crop area fraction of the single view.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.6,
        norm_pix_loss: bool = False,
        min_scale: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        mixer = TOKEN_MIXERS.get(getattr(backbone, "token_mixer", None))
        if (
            mixer
            and mixer.position_blind
            and isinstance(getattr(backbone, "pos_embed", None), NoPosEmbed)
        ):
            aware = ", ".join(repr(n) for n, c in TOKEN_MIXERS.items() if not c.position_blind)
            raise ValueError(
                f"masked modelling with token_mixer={mixer.name!r} and pos_embed='none' is "
                f"degenerate: {mixer.position_blind} and every mask token has the same "
                "input, so every masked patch gets the same prediction. Add a position "
                "embedding (pos_embed='learned' or 'sincos2d') or use a position-aware mixer "
                f"(token_mixer={aware})."
            )
        super().__init__(**MaskedReconstruction.arguments_of(locals()))
        self.num_prefix_tokens: int = backbone.num_prefix_tokens
        width = getattr(backbone, "width", backbone.num_features)  # token width after the stem
        self.mask_token = nn.Parameter(trunc_normal_(torch.zeros(1, 1, width), std=0.02))
        self.head = nn.Linear(backbone.num_features, self.pixels_per_patch)

    def predict_masked(
        self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        num_patches = patchify_count(images, self.patch_size)
        mask = idx_mask.new_zeros(idx_mask.shape[0], num_patches, dtype=torch.bool)  # [B, N]
        mask = mask.scatter(1, idx_mask, True)  # [B, N]
        tokens = embed_with_mask_token(self.backbone, images, mask, self.mask_token)  # [B, N, D]
        encoded = self.backbone.forward_tokens(tokens)  # [B, P+N, D']
        features = self.backbone.pool_tokens(encoded)  # [B, D']
        masked_out = get_at_index(encoded[:, self.num_prefix_tokens :], idx_mask)  # [B, M, D']
        return self.head(masked_out), features  # [B, M, p*p*C], [B, D']


def embed_with_mask_token(
    backbone: nn.Module, images: Tensor, mask: Tensor, mask_token: Tensor
) -> Tensor:
    """Patch tokens ``[B, N, D]`` of ``images`` with the ``mask`` ``[B, N]`` (True = masked,
    row-major) patches hidden, for any isotropic backbone (``embed_patches``, ``patch_size``).

    The masked patches' pixels are set to 0 (the dataset mean) before the stem, so a stem that
    overlaps neighbouring patches cannot read them; their embeddings are then replaced by
    ``mask_token`` ``[1, 1, D]``. The position embedding is added later, in ``forward_tokens``.
    """
    patch_size = backbone.patch_size
    patches = patchify(images, patch_size)  # [B, N, p*p*C]
    hidden = patches.masked_fill(mask[..., None], 0.0)  # [B, N, p*p*C]
    tokens = backbone.embed_patches(unpatchify(hidden, patch_size, images.shape[1]))  # [B, N, D]
    return torch.where(mask[..., None], mask_token.to(tokens.dtype), tokens)  # [B, N, D]
