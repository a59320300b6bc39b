"""Numeric precision: one vocabulary for training (chapter 3) and sizing (chapter 5).

A *precision* names a whole recipe, not just a dtype: where the weights live, which dtype
the matrix multiplications run in, whether the optimizer updates an fp32 master copy and
whether the loss must be scaled. Training and sizing use the same names, so chapter 5 sizes
exactly what chapter 3 runs under that name (section 3.9, "Mixed precision and gradient
accumulation"; section 5.4, "Training memory: states and activations").

==============  ==============  ===============  ================  ============
name            stored weights  matmuls run in   fp32 master copy  loss scaling
==============  ==============  ===============  ================  ============
``fp32``        fp32            fp32             --                no
``bf16-mixed``  fp32            bf16 (autocast)  the weights       no
``fp16-mixed``  fp32            fp16 (autocast)  the weights       yes
``bf16-true``   bf16            bf16             no                no
==============  ==============  ===============  ================  ============

The two mixed recipes are PyTorch's automatic mixed precision: the weights stay fp32 (they
*are* the master copy) and autocast runs the matmuls in half precision. ``bf16-true`` stores
everything in bf16; the Trainer does not run it (updates below bf16's resolution are lost),
but sizing shows what it would save. The older names ``bf16``, ``fp16`` (the Trainer's) and
``mixed`` (sizing's) are accepted and mean the mixed recipes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LEGACY_NAMES",
    "PRECISIONS",
    "TRAINING_PRECISIONS",
    "Precision",
    "canonical_precision",
    "get_precision",
]


@dataclass(frozen=True)
class Precision:
    """One numeric recipe (see the module's table) (section 3.9)."""

    name: str
    #: dtype of the stored weights and their gradients (``"fp32"`` or ``"bf16"``).
    weights: str
    #: dtype the matrix multiplications run in (autocast's dtype when it differs).
    compute: str
    #: whether the optimizer updates a separate fp32 copy of the weights.
    master_weights: bool
    #: whether fp16 gradients need a dynamic loss scale (``torch.amp.GradScaler``).
    loss_scaling: bool
    #: whether :class:`tinytrans.Trainer` runs this recipe.
    trainable: bool
    description: str

    @property
    def autocast(self) -> str | None:
        """The autocast dtype (``"bf16"``/``"fp16"``), or ``None`` when nothing is cast."""
        return self.compute if self.compute != self.weights else None


#: Every recipe by its canonical name, in the order of the module's table.
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "fp32", "fp32", False, False, True, "everything in float32"),
        Precision(
            "bf16-mixed", "fp32", "bf16", False, False, True,
            "fp32 weights, bf16 autocast for the matmuls",
        ),
        Precision(
            "fp16-mixed", "fp32", "fp16", False, True, True,
            "fp32 weights, fp16 autocast and a dynamic loss scale",
        ),
        Precision(
            "bf16-true", "bf16", "bf16", False, False, False,
            "weights, gradients and activations in bf16 (fp32 Adam moments)",
        ),
    )
}  # fmt: skip

#: What :class:`tinytrans.TrainConfig` accepts: ``auto`` (chosen per device) and the recipes
#: the Trainer runs.
TRAINING_PRECISIONS: tuple[str, ...] = ("auto", *(n for n, p in PRECISIONS.items() if p.trainable))

#: Older names, still read from saved configs and accepted as arguments.
LEGACY_NAMES: dict[str, str] = {"bf16": "bf16-mixed", "fp16": "fp16-mixed", "mixed": "bf16-mixed"}


def canonical_precision(name: str) -> str:
    """The canonical name of a precision given by its name or an older one; ``ValueError``
    naming the choices otherwise. ``"auto"`` is returned as is (the device decides).

    Section 3.9."""
    if name == "auto" or name in PRECISIONS:
        return name
    if isinstance(name, str) and name in LEGACY_NAMES:
        return LEGACY_NAMES[name]
    raise ValueError(
        f"precision must be one of {['auto', *PRECISIONS]}, got {name!r} "
        f"(older names {sorted(LEGACY_NAMES)} mean the mixed recipes)."
    )


def get_precision(name: str) -> Precision:
    """The :class:`Precision` called ``name`` (canonical or older name; not ``"auto"``).
    (Section 3.9.)"""
    canonical = canonical_precision(name)
    if canonical == "auto":
        raise ValueError(
            "precision 'auto' depends on the device: resolve it first "
            "(tinytrans.env.auto_precision)."
        )
    return PRECISIONS[canonical]
