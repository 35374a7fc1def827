"""The training tricks a run uses (`Tricks`), as plain data: which of
label smoothing, mixup, cutmix and RandAugment are on, and the parameter
columns they draw per image. kerascnn.data.tricks implements them."""

import dataclasses

MIX_COLUMNS = ("mix_partner", "mix_blend", "mix_share", "cut_top", "cut_left", "cut_bottom", "cut_right")
SEED_COLUMNS = ("randaugment_seed0", "randaugment_seed1")


@dataclasses.dataclass(frozen=True)
class Tricks:
    """The tricks a run uses: 0 / False is off."""

    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(alpha, alpha) of the mixing share
    cutmix: float = 0.0
    randaugment: bool = False
    randaugment_strength: float = 0.5  # Keras' RandAugment `factor`

    @classmethod
    def of(cls, settings):
        """The tricks of a FitConfig (or anything with these attributes)."""
        return cls(*(getattr(settings, f.name, None) or f.default for f in dataclasses.fields(cls)))

    @property
    def soft_labels(self):
        """Whether the run's labels are one-hot (mixed when training)."""
        return bool(self.label_smoothing or self.mixup or self.cutmix)

    @property
    def mixes(self):
        return bool(self.mixup or self.cutmix)

    def columns(self):
        """The parameter columns `mix_rows` draws for these tricks."""
        return (MIX_COLUMNS if self.mixes else ()) + (SEED_COLUMNS if self.randaugment else ())

    def __bool__(self):
        return bool(self.soft_labels or self.randaugment)

    def describe(self):
        """"mixup 0.2, randaugment": the tricks on, or ""."""
        parts = [f"{name.replace('_', ' ')} {value:g}" for name, value in
                 (("label_smoothing", self.label_smoothing), ("mixup", self.mixup), ("cutmix", self.cutmix)) if value]
        strength = f" {self.randaugment_strength:g}" * (self.randaugment_strength != Tricks.randaugment_strength)
        return ", ".join(parts + [f"randaugment{strength}"] * bool(self.randaugment))
