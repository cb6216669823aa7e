"""Knowledge distillation: the uncompressed model teaches its TT-compressed self during fine-tuning.

Loss (Hinton et al., 2015), on the time-averaged outputs z = mean_t out[t] of student and teacher:

    L = (1 - a) * task_loss + a * t^2 * KL(softmax(z_teacher / t) || softmax(z_student / t))

i.e. `F.kl_div(log_softmax(z_student / t), softmax(z_teacher / t))`, batch mean; the t^2 keeps the
soft term's gradients on the task term's scale whatever the temperature. The teacher runs in eval
mode (BatchNorm on running statistics, no dropout) under `torch.no_grad()`, never wrapped in DDP:
under torchrun every process runs its own copy on its own shard of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.spiking.runner import run_timesteps


def distillation_term(student_out: torch.Tensor, teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
    """t^2 * KL(teacher || student) of the softened time-averaged outputs ([T, B, classes] each)."""
    student = F.log_softmax(student_out.mean(0) / temperature, dim=-1)
    teacher = F.softmax(teacher_out.mean(0) / temperature, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean") * temperature**2


@dataclass
class Distiller:
    """Mixes a frozen teacher's soft targets into the task loss (see the module docstring)."""

    teacher: nn.Module
    weight: float = 0.5
    temperature: float = 4.0

    def prepare(self, device: torch.device) -> None:
        self.teacher.to(device).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def soft_targets(self, inputs: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()
        return run_timesteps(self.teacher, inputs, fold=True)

    def loss(self, task_loss: torch.Tensor, student_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        teacher_out = self.soft_targets(inputs)
        soft = distillation_term(student_out, teacher_out, self.temperature)
        return (1.0 - self.weight) * task_loss + self.weight * soft
