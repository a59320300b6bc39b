"""Facts about the installed torch that several test modules skip or branch on."""

from __future__ import annotations

import torch

#: torch 2.4 brought the fused CPU AdamW kernel that ``build_optimizer`` picks.
FUSED_CPU_ADAMW = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
