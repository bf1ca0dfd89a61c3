"""Host side of firsthop: the node agent and the Slurm plug-in.

Must not import ``scheduler``: agents speak to the scheduler only over gRPC.
"""
