"""Training: survival losses (torchsurv wrappers), the AdamW loop with early stopping, device and seeding rules."""

from omics_risk.training.device import amp_dtype, autocast, make_grad_scaler, seed_everything, select_device
from omics_risk.training.loop import TrainResult, concordance, evaluate, fit_network, predict_outputs
from omics_risk.training.losses import CoxMomentum, MultiTaskObjective, cox_loss, discrete_time_nll, masked_bce

__all__ = [
    "CoxMomentum",
    "MultiTaskObjective",
    "TrainResult",
    "amp_dtype",
    "autocast",
    "concordance",
    "cox_loss",
    "discrete_time_nll",
    "evaluate",
    "fit_network",
    "make_grad_scaler",
    "masked_bce",
    "predict_outputs",
    "seed_everything",
    "select_device",
]
