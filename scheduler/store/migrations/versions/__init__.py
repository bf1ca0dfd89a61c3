"""Migration revisions, oldest first (``v<NNNN>_<name>.py``)."""
