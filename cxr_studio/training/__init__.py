"""The trainer behind ``cxr-studio-train``: datasets and splits (data), recipes, fit/resume/DDP
(fit, run_folder, run_state), evaluation, randomized search. Imports ``cxr_studio.core``, never the GUI."""
