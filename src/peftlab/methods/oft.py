"""OFT: an orthogonal, block-diagonal rotation of each layer's input, trained through its
Cayley parameterisation (peft.OFTConfig, Qiu et al. 2023): the angles between neurons kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from peftlab.methods.base import (
    LayerMethod,
    adapted_layers,
    key,
    method_name,
    register,
    require,
    require_counts,
    require_fractions,
)


def require_blocks(method: LayerMethod, count: str, size: str) -> None:
    """OFT's and BOFT's blocks are counted or sized: two keys >= 0, exactly one of them 0."""
    for name in (count, size):
        value = getattr(method, name)
        require(value >= 0, f"peft.{name}", value, "an integer >= 0")
    value, other = getattr(method, count), getattr(method, size)
    allowed = f"0 with peft.{size}={other}" if other else f"non-zero with peft.{size}=0"
    require((value == 0) != (other == 0), f"peft.{count}", value, f"{allowed} (set one of the two)")


@register
@dataclass
class OFT(LayerMethod):
    method: str = method_name("oft")
    r: int = key(0, "Blocks per layer, or 0 to size them by oft_block_size (set one of the two).")
    oft_block_size: int = key(
        32,
        "Side of each rotation block, or 0 to count them by r; peft moves a size that does not "
        "divide a layer's input to the nearest one that does.",
    )
    module_dropout: float = key(
        0.0, "Chance of a block being left unrotated while training, in [0, 1)."
    )
    use_cayley_neumann: bool = key(
        True, "Approximate the Cayley transform's inverse by a Neumann series (faster)."
    )
    num_cayley_neumann_terms: int = key(5, "Terms of that series (>= 1): more, more orthogonal.")
    coft: bool = key(False, "Constrained OFT: keep each rotation within eps of the identity.")
    eps: float = key(6e-5, "How far coft lets a rotation move from the identity (> 0).")
    block_share: bool = key(False, "One rotation block shared by all blocks of a layer.")
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "OFT"
    config_class: ClassVar[str] = "OFTConfig"
    # Of 5.7e-5, 1.7e-4, 5e-4, 1.5e-3, the lowest held-out loss (2.355) on the reference CSV as a
    # task: BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 1.7e-4

    def __post_init__(self) -> None:
        require_blocks(self, "r", "oft_block_size")
        require_counts(self, "num_cayley_neumann_terms")
        require_fractions(self, "module_dropout")
        require(self.eps > 0, "peft.eps", self.eps, "> 0")

    @classmethod
    def suggest(cls, trial):
        trial.suggest_categorical("peft.oft_block_size", [16, 32, 64])
