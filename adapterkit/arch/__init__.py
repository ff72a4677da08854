"""The architecture side: plugin declarations, the registry that holds them, their schema and checks, inference of
undeclared families, detect (hyperparameters for a checkpoint), validation, conformance and new-plugin scaffolds."""
