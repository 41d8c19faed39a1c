"""Kept importable where scripts have always found it: ``fit`` and its helpers now live in
``cxr_studio.training.fit`` (the run folder's checks in ``run_folder``, last.pt's state in ``run_state``)."""
from cxr_studio.training.fit import *  # noqa: F401,F403
from cxr_studio.training.fit import LOG_FIELDS, RunState, _score, _write_log, choose_training_device, fit, pick_device  # noqa: F401
from cxr_studio.training.loops import train_epoch  # noqa: F401
from cxr_studio.training.run_folder import check_resume_recipe as _check_resume_recipe  # noqa: F401
