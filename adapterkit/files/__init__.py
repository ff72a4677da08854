"""Files in and out: bounded readers of untrusted JSON/YAML, and atomic writes (an interrupted run leaves the
previous file intact)."""
