"""Typed settings of the editing methods, read once from EasyEdit-style hyperparameter files, and their checks
against a model; below editing/, so the core reads settings without knowing the methods."""
