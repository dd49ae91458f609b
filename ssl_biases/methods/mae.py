"""MAE (He et al., arXiv 2111.06377): encode the visible patches only, decode the masked ones."""

from __future__ import annotations

from lightly.models.modules import MaskedVisionTransformerDecoderTIMM
from lightly.models.utils import get_at_index, set_at_index
from torch import Tensor, nn

from ssl_biases.backbones.mixers import TOKEN_MIXERS
from ssl_biases.methods.base import DEFAULT_TRAINING
from ssl_biases.methods.lens import Lens
from ssl_biases.methods.reconstruction import MaskedReconstruction
from ssl_biases.methods.training import Training


class MAE(MaskedReconstruction):
    """Masked autoencoder on a backbone that can drop tokens.

    The encoder (the backbone) sees only the ``1 - mask_ratio`` visible patches:
    ``forward_tokens(embed_patches(x), keep=idx_keep)``, with its own position embedding and
    class token. A small transformer decoder (lightly's ``MaskedVisionTransformerDecoderTIMM``:
    learned mask token, fixed 2-D sin-cos position embedding) receives the projected encoder
    tokens at their grid positions and mask tokens elsewhere; a linear layer predicts each
    masked patch's pixels; the loss is the MSE on the masked patches (optionally of per-patch
    normalised pixels, ``norm_pix_loss``).

    Only backbones with ``supports_token_dropping`` work: IsotropicNet with a mixer that
    works on any subset of tokens (``token_mixer='attention'``, presets ``vit_*``, or
    ``'identity'``, preset ``identity_tiny``). Other mixers need the full grid; use the
    BERT-style :class:`~ssl_biases.methods.masked.MaskedModeling` (``configs/method/masked.yaml``).

    The online probe trains on the unmasked view's embedding (an extra no-grad forward,
    :meth:`~ssl_biases.methods.reconstruction.MaskedReconstruction.probe_features`, about
    +13 % of a step at CPU scale), as it is tested on unmasked images.

    Args:
        backbone: An IsotropicNet with an attention token mixer.
        mask_ratio: Fraction of the patches that are masked (0.75 in the paper).
        decoder_dim: Width of the decoder (512 in the paper; 128 at CPU scale).
        decoder_depth: Number of decoder blocks (8 in the paper; 2 at CPU scale).
        decoder_num_heads: Attention heads of the decoder (must divide ``decoder_dim``).
        norm_pix_loss: Reconstruct per-patch normalised pixels (the paper's better variant).
        min_scale: Smallest random-resized-crop area fraction of the single view.
    """

    def __init__(
        self,
        backbone: nn.Module,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_num_heads: int = 4,
        norm_pix_loss: bool = False,
        min_scale: float = 0.2,
        *,
        lens: Lens | None = None,
        training: Training = DEFAULT_TRAINING,
    ) -> None:
        if not getattr(backbone, "supports_token_dropping", False):
            mixer = getattr(backbone, "token_mixer", None)
            dropping = " or ".join(
                repr(name) for name, cls in TOKEN_MIXERS.items() if cls.supports_token_dropping
            )  # 'attention' or 'identity'
            raise ValueError(
                f"MAE encodes only the visible patches, so its backbone must drop tokens "
                f"(supports_token_dropping=True); {type(backbone).__name__}"
                f"{f' with token_mixer={mixer!r}' if mixer else ''} cannot. Supported: "
                f"ssl_biases.backbones.IsotropicNet with token_mixer={dropping} (presets "
                "vit_tiny, vit_tiny_gap, vit_small, vit_ti16, vit_s16, identity_tiny, ...). "
                "For any other "
                "isotropic backbone use BERT-style masked modelling: --config "
                "configs/method/masked.yaml "
                "(ssl_biases.methods.MaskedModeling)."
            )
        if decoder_dim % decoder_num_heads:
            raise ValueError(
                f"decoder_dim {decoder_dim} is not divisible by decoder_num_heads "
                f"{decoder_num_heads}"
            )
        super().__init__(**MaskedReconstruction.arguments_of(locals()))
        self.num_prefix_tokens: int = backbone.num_prefix_tokens
        self.decoder_embed = nn.Linear(backbone.num_features, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=backbone.num_patches,
            embed_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            num_prefix_tokens=self.num_prefix_tokens,
        )
        self.decoder_pred = nn.Linear(decoder_dim, self.pixels_per_patch)

    def predict_masked(
        self, images: Tensor, idx_keep: Tensor, idx_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        prefix = self.num_prefix_tokens
        tokens = self.backbone.embed_patches(images)  # [B, N, D]
        encoded = self.backbone.forward_tokens(tokens, keep=idx_keep)  # [B, P+K, D']
        features = self.backbone.pool_tokens(encoded)  # [B, D'], visible patches only
        x = self.decoder_embed(encoded)  # [B, P+K, d]
        batch, num_patches = tokens.shape[:2]
        full = x.new_zeros(batch, prefix + num_patches, x.shape[-1])  # [B, P+N, d]
        full[:, :prefix] = x[:, :prefix]
        full = set_at_index(full, idx_keep + prefix, x[:, prefix:])  # visible at their slots
        decoded = self.decoder(full, idx_mask=idx_mask + prefix)  # [B, P+N, d], mask tokens
        prediction = self.decoder_pred(get_at_index(decoded, idx_mask + prefix))  # [B, M, p*p*C]
        return prediction, features
