"""engine: see buildml/ARCHITECTURE.md."""
