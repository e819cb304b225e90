"""WaveFT: a sparse set of trained wavelet coefficients per layer, made into a full-rank weight
update by the inverse wavelet transform (peft.WaveFTConfig, Bilican et al. 2025)."""

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
)

# peft's wavelet families (waveft/constants.py), spelled out so a config validates without torch.
WAVELETS = (
    [f"db{n}" for n in range(1, 39)]
    + [f"sym{n}" for n in range(2, 21)]
    + [f"coif{n}" for n in range(1, 18)]
)


@register
@dataclass
class WaveFT(LayerMethod):
    method: str = method_name("waveft")
    n_frequency: int = key(
        2592, "Trained wavelet coefficients per layer, at most the smallest layer's in x out."
    )
    scaling: float = key(25.0, "Multiplier of the update (as LoRA's alpha), > 0.")
    wavelet_family: str = key(
        "db1", "The wavelet: db1 (Haar) to db38, sym2 to sym20 or coif1 to coif17."
    )
    use_idwt: bool = key(
        True, "Inverse wavelet transform of the coefficients; false: they are the update (faster)."
    )
    target_modules: list[str] | None = adapted_layers()

    peft_type: ClassVar[str] = "WAVEFT"
    config_class: ClassVar[str] = "WaveFTConfig"
    # Of 1e-4, 3e-4, 9e-4, the lowest held-out loss (2.352) on the reference CSV as a task:
    # BENCHMARKS, "Every method".
    learning_rate: ClassVar[float] = 3e-4

    def __post_init__(self) -> None:
        require_counts(self, "n_frequency")
        require(self.scaling > 0, "peft.scaling", self.scaling, "> 0")
        require(
            self.wavelet_family in WAVELETS,
            "peft.wavelet_family",
            self.wavelet_family,
            "db1-db38, sym2-sym20 or coif1-coif17",
        )

    @classmethod
    def suggest(cls, trial):
        # FourierFT's choices (one distribution a name), around peft's 2592.
        trial.suggest_categorical("peft.n_frequency", [1000, 2000, 5000])
