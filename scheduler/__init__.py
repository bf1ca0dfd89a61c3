"""The firsthop control plane: scheduling core, store, gRPC API, runtime and CLIs."""
