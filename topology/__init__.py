"""Network hierarchy of a GPU cluster: model, file formats, generators, index, Slurm export.

Pure: must not import grpc, generated protos, databases, subprocess, or anything from
``placement``, ``scheduler`` or ``agents``.
"""
