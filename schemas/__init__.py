"""JSON schemas shipped with adapterkit (the repository folder schemas/)."""
