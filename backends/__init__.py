"""Configuration and launchers of the real servers unidist backends talk to."""
