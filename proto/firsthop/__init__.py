"""Root of the firsthop wire contract; ``firsthop.v1`` holds the generated protobuf code.

Must not import ``topology``, ``placement``, ``scheduler`` or ``agents``: the contract sits below
every component that speaks it.
"""
