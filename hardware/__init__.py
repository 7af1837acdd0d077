"""The real Dobot X-Trainer backend (--backend real) and its loopback emulator."""
